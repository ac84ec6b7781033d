"""Intake: a request from the queue, HTTP, the CLI or ``python -m services.jobs`` becomes a
queued job. ``request`` is its wire format, ``admission.admit`` the one door (checked
request or rejection), ``trust`` the operator's checks, ``records`` records it, ``broker``
the RabbitMQ queues, ``ingress`` the Ray actor that consumes the queue and submits jobs.
No torch in this package (import-linter)."""
