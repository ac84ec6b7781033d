"""The ``colecionador`` command (``[project.scripts]``: ``services.cli:main``).

Bad arguments (an unknown or ill-typed ``--set`` key, a missing local dataset, an
unreadable config file) exit with code 2 and one line saying why, before anything is
written. A job that fails at a later step exits 1, with the reason recorded on the job.

One module per command group, each with ``add_parsers(sub)``; dispatch.py lists them in
``COMMANDS`` (one line each) and runs the chosen ``cmd_*(args, parser)``:

- jobs.py: ``train``, ``tune``, ``status``, ``submit``
- preflight.py: ``preflight``
- predict.py: ``predict`` (bulk predictions, run here as a job)
- models.py: ``promote``; compare.py: ``compare``
- serve.py: ``serve``; up.py: ``up`` and ``down``; ingress.py: ``ingress``
- db.py: ``db upgrade``; demo.py: ``demo``
- args.py: the argument types and hyperparameter options they share

docs/reference/cli.md names every subcommand and option (a unit test keeps it so).
"""

from services.cli.dispatch import build_parser, main

__all__ = ["build_parser", "main"]
