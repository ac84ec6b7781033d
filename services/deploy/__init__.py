"""``colecionador up`` and ``down``: the service made to exist on the Ray cluster it is
pointed at, idempotently.

- recipe.py: what a thing is deployed with (the effective non-secret settings, a salted
  hash of the secret ones, its options) and how two recipes differ.
- options.py: the deployment options of ``up`` (ports, replicas, ...), validated once.
- serve_state.py: what runs on Ray Serve (applications, their recipe, replicas).
- things.py: one step per thing (database, ingress, Serve, the API, a predict app).
- up.py: ``up`` and ``down`` in order, a line per thing.
The ``up`` / ``down`` command lines are services/cli/up.py.
"""
