"""Model-written evals (Perez et al. 2022): load, normalise answer polarity, drop off-topic items."""

from undertow.experiments.prompts.mwe.load import FILE_PROFILES, HUB_ID, load_model_written_evals

__all__ = ["FILE_PROFILES", "HUB_ID", "load_model_written_evals"]
