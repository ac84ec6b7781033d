"""Prometheus metrics (docs/operations/metrics.md).

Two sources, because the processes differ:

- ``collector``: what the database knows (jobs by status, the outbox, resubmissions,
  gate outcomes, running jobs' throughput, duration histograms), computed at scrape time
  by a custom collector behind the API's ``GET /metrics``, so every API replica answers
  the same truth; ``queue``: the requests queue's depth, asked of the broker.
- ``process``: what lives in one process and is gone with it (predict latency in a
  model's Serve replica, reconciler passes in the ingress actor), recorded with Ray's
  metrics API (``ray.util.metrics``) and exported by each node's Ray metrics agent, as
  Ray Serve's own metrics are.
"""
