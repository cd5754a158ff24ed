"""undertow.probes: linear probes as a library.

Fit, evaluate, control and save linear probes on activations (tensors or an
activation store); no model loading here. Main entry points:

- :func:`sweep` - every hook x probe type, grouped CV, baselines, CIs, operating point; with
  ``evaluations=[eval_set(...)]`` and ``calibration=calibration_set(...)`` also the AUROCs on
  independently written / external sets and thresholds set on ordinary chat (issue 10).
- :func:`generalisation_matrix`, :func:`transfer` - train on one domain / dataset, test on others.
- :func:`fit_probe` - one probe on ``acts[N, D]``; :class:`Probe` - the saved artifact.
- :mod:`undertow.probes.metrics` - AUROC, AUPRC, TPR@FPR, cluster bootstrap, permutations, Holm/BH.
- :class:`ActivationSource` - the store protocol (``hooks``, ``rows``, ``store[hook] -> [N, D]``).

Example::

    from undertow.probes import sweep
    res = sweep(store, embed_hook="resid_pre.0", lexical_auroc=lex)   # lex: experiments.audit result
    print(res.format_table(probe_type="logistic"))
    res.probe().save("probes/shutdown-aversion")                            # operating point, val-chosen

The online monitor lives in :mod:`undertow.probes.monitor` (imported on demand: it needs
``undertow.activations`` and ``undertow.kernels``).
"""

from .artifact import Probe, hash_training_data
from .config import PROBE_TYPES, FitConfig, SweepConfig
from .errors import ProbeError, ProbeWarning
from .external import CalibrationSet, EvalSet, calibration_set, eval_set, require_calibration
from .folds import grouped_folds, make_splits
from .generalisation import GeneralisationResult, TransferResult, generalisation_matrix, transfer
from .layers import LayerFit, fit_layers, fit_probe
from .metrics import (
    auprc,
    auroc,
    auroc_permutation_null,
    benjamini_hochberg,
    bootstrap_auroc,
    bootstrap_ci,
    cluster_bootstrap_counts,
    cluster_bootstrap_weights,
    holm,
    permutation_pvalue,
    permute_labels,
    threshold_at_fpr,
    tpr_at_fpr,
)
from .result import COLUMNS, OperatingPoint, SweepResult
from .store import ActivationSource, TensorStore
from .sweep import sweep
from .synthetic import SyntheticStore, make_synthetic

__all__ = [
    "PROBE_TYPES", "FitConfig", "SweepConfig", "ProbeError", "ProbeWarning", "Probe", "hash_training_data",
    "sweep", "SweepResult", "OperatingPoint", "COLUMNS", "generalisation_matrix", "GeneralisationResult",
    "transfer", "TransferResult", "fit_probe", "fit_layers", "LayerFit", "grouped_folds", "make_splits",
    "ActivationSource", "TensorStore", "SyntheticStore", "make_synthetic", "auroc", "auprc", "threshold_at_fpr",
    "tpr_at_fpr", "cluster_bootstrap_counts", "cluster_bootstrap_weights", "bootstrap_auroc", "bootstrap_ci",
    "permute_labels", "auroc_permutation_null", "permutation_pvalue", "holm", "benjamini_hochberg",
    "EvalSet", "CalibrationSet", "eval_set", "calibration_set", "require_calibration",
]
