"""undertow.experiments.suppression: the suppression experiment of EXPERIMENT.md (model organism, arms, residue)."""
