"""undertow.sae: sparse autoencoders through sae-lens, trained from undertow stores.

sae-lens does the architectures, the training loop (``SAETrainer``), the mixing buffer, the evals and
the save format; undertow adds the activation source (``data``), the training mix (``corpus``),
provenance and safe checkpoints (``io``, ``checkpoint``), and the analysis (``features``, ``probes``).

- :func:`undertow.sae.train.train_sae` - ``SAEConfig`` + a data provider -> a trained, saved SAE.
- :func:`undertow.sae.data.store_provider` / :func:`undertow.sae.data.model_provider` - activation batches.
- :func:`undertow.sae.evals.evaluate_sae` - explained variance, L0, dead %, CE loss recovered.
- :func:`undertow.sae.io.load_sae` - ``SAE.load_from_disk`` plus the model-fingerprint check.
- :func:`undertow.sae.features.feature_activations`, :func:`undertow.sae.features.contrast_features`.
- :func:`undertow.sae.probes.compare_probes` - SAE-feature probes vs raw probes on identical splits.
"""

from .config import ArchConfig, DataConfig, SAEConfig, TrainConfig
from .errors import CheckpointError, SAEError

__all__ = ["ArchConfig", "CheckpointError", "DataConfig", "SAEConfig", "SAEError", "TrainConfig"]
