"""Training hooks: the margin scheduler, the trainer that drives it, and the speaker
task that adds ``--margin_scheduler`` to ESPnet's options."""
