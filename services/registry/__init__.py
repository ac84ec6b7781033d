"""Model versions in use: ``promotion`` (aliases: the gate's production, a person's
promote) and ``serving`` (a Ray Serve application per model, following its alias)."""
