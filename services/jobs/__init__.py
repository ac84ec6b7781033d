"""A job's life on Ray: ``driver`` (``python -m services.jobs``: every step in order, one
final status, the event), ``steps`` and ``tune_step`` (what the driver runs),
``lifecycle`` (the final status and its event, together), ``reconciler`` (every job ends:
submit, resubmit, fail), ``ray_jobs`` (Ray's job server), ``progress`` (each epoch's row)."""
