"""Events: what goes out (``schemas``: ModelEvaluation, ModelPromoted) and how it goes out
at least once (``outbox``: staged in the job's own transaction, published after)."""
