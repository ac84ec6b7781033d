"""Intake: a request from the queue, HTTP, the CLI or ``python -m services.jobs`` becomes a
queued job. ``request`` is its wire format, ``admission.admit`` the one door (checked
request or rejection), ``trust`` the operator's checks, ``records`` records it. The
queues are services/events/broker.py, the consumer services/ingress/. No torch in this
package (import-linter)."""
