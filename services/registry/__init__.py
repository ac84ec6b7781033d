"""Model versions in use: ``promotion`` (aliases: the gate's production, a person's
promote), ``serving`` (a Ray Serve application per model, following its alias), and
``model_card`` (a version's card, with ``card_inputs`` and ``card_types``: its lineage)."""
