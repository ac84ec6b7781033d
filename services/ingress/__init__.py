"""The ingress: a detached, named Ray actor that consumes ``training.requests`` and makes
sure every job ends.

For each message: validate it (a malformed one is published to the dead-letter queue with
the reason in its headers, then acked: nothing is written); record the job
(services/intake/records.py: batch_id is unique, so a redelivered or duplicated message finds
the job it already made); ack once the row is committed; then submit
``python -m services.jobs --job-id N`` as a Ray job whose submission id is derived from
the job id, so a retry finds the Ray job it already submitted (services/jobs/ray_jobs.py).

Beside the consumer, every ``reconcile_interval_s``: the reconciler
(services/jobs/reconciler.py: queued jobs without a Ray job are submitted, dead drivers
resubmitted or their jobs failed) and the outbox (services/events/outbox.py: unpublished events
are published).

It cannot die silently: the broker or the database unreachable, at start or later, is
retried with backoff (the status says so: ``last_error``, ``reconnects``). While the
database is down it stops consuming (a message that could not be recorded is requeued
once, not spun on) and resumes when the database answers. This package imports neither
torch nor training code: consumer.py is the work, actor.py the Ray actor."""

from services.ingress.actor import ACTOR_NAME, get_ingress, start_ingress, stop_ingress
from services.ingress.consumer import MAX_BACKOFF_S, Consumer

__all__ = [
    "ACTOR_NAME",
    "Consumer",
    "MAX_BACKOFF_S",
    "get_ingress",
    "start_ingress",
    "stop_ingress",
]
