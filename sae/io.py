"""Save and load SAEs in sae-lens' own layout, with undertow's provenance in ``cfg.json``'s ``metadata``.

``save_sae`` calls sae-lens' ``save_inference_model`` (``sae_weights.safetensors`` + ``cfg.json``; a
BatchTopK SAE is saved as the JumpReLU SAE it is at inference). ``metadata`` keeps, besides sae-lens'
own keys (``sae_lens_version``, ``hook_name`` as a TransformerLens name so sae-lens' evals can splice it,
``model_name``), undertow's: ``undertow_hook``, ``undertow_model_fingerprint``, ``undertow_store``,
``undertow_dataset_hash``, ``undertow_corpus_hash``, ``undertow_tokens_trained``. sae-lens keeps custom
metadata keys only when ``sae_lens_version`` is present (else its pre-6.0 path rebuilds them), which
sae-lens' ``SAEMetadata`` always writes. No pickle anywhere: ``SAE.load_from_disk`` reads safetensors + JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from sae_lens import SAE
from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME

from .errors import SAEError

FINGERPRINT_KEY = "undertow_model_fingerprint"


def provenance(model_name: str, fingerprint: str, hook: str, *, store=None, corpus_hash: str | None = None) -> dict:
    """``cfg.metadata`` entries of an undertow SAE: sae-lens' keys (``hook_name`` as the TransformerLens
    name its evals splice at, ``model_name``, ``prepend_bos``) plus undertow's provenance."""
    from undertow.activations.models.hooks import parse_hooks

    layer = int(hook.rsplit(".", 1)[-1]) if hook[-1].isdigit() else 0
    point = parse_hooks([hook], layer + 1)[0]
    meta = {"hook_name": point.tl_name, "model_name": model_name, "prepend_bos": True, "undertow_hook": point.name,
            FINGERPRINT_KEY: fingerprint}
    if store is not None:
        meta.update(undertow_store=str(store.path), undertow_dataset_hash=store.dataset_hash)
    if corpus_hash is not None:
        meta["undertow_corpus_hash"] = corpus_hash
    return meta


def save_sae(sae, path: str | Path, **metadata) -> Path:
    """Save a (training or inference) SAE under ``path``; ``metadata`` keys are added to ``cfg.metadata``."""
    path = Path(path)
    for k, v in metadata.items():
        sae.cfg.metadata[k] = v
    if hasattr(sae, "save_inference_model"):
        sae.save_inference_model(path)
    else:
        sae.save_model(path)
    return path


def read_metadata(path: str | Path) -> dict:
    """``cfg.json``'s metadata without loading the weights."""
    cfg_path = Path(path) / SAE_CFG_FILENAME
    try:
        return json.loads(cfg_path.read_text()).get("metadata", {})
    except (OSError, json.JSONDecodeError) as e:
        raise SAEError(f"{cfg_path} is missing or unreadable ({e}); point at a directory written by "
                       "`undertow sae train` (sae_weights.safetensors + cfg.json)") from None


def load_sae(path: str | Path, expected_fingerprint: str | None = None, *, allow_other_model: bool = False,
             device: str = "cpu"):
    """``sae_lens.SAE.load_from_disk(path)``, refusing an SAE trained on another model.

    ``expected_fingerprint`` is the loaded model's ``handle.fingerprint`` (or a store's); a mismatch
    raises ``SAEError`` unless ``allow_other_model=True``."""
    path = Path(path)
    if not (path / SAE_WEIGHTS_FILENAME).is_file():
        raise SAEError(f"{path} has no {SAE_WEIGHTS_FILENAME}; point at a directory written by `undertow sae train`")
    meta = read_metadata(path)
    have = meta.get(FINGERPRINT_KEY)
    if expected_fingerprint is not None and have != expected_fingerprint and not allow_other_model:
        raise SAEError(f"SAE {path} was trained on model {have} ({meta.get('model_name')}), not {expected_fingerprint}; "
                       "use an SAE of this model, or pass allow_other_model=True to read it anyway")
    try:
        return SAE.load_from_disk(str(path), device=device)
    except (KeyError, ValueError, RuntimeError, OSError) as e:
        raise SAEError(f"sae-lens cannot load {path}: {str(e).splitlines()[0][:160]}") from None
