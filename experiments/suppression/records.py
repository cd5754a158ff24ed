"""Typed results of the stages that later stages read (the headline layer, the ablation choice): written to the
stage cache as JSON by ``to_dict`` and read back by ``from_dict``, so a resumed run and an uninterrupted one
hand the same values on (``stages.Stages.record``). results.json carries their ``to_dict``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerChoice:
    """``layer.json``: the headline layer, chosen on validation self items (``run.choose_layer``)."""

    layer: int
    """The decoder layer whose output is the headline read-out (``cfg.layer`` when the config fixes one)."""
    chosen_on_val: bool
    """Whether it was chosen on validation (False: fixed by the config)."""
    val_score_by_layer: list[float]
    """Per layer: organism minus base along the drive direction, in units of the pooled spread (validation
    self items); averaged over the fine-tune seeds where there are several."""
    readout_layers: list[int]
    """The layers the choice was allowed among (inside the adapted blocks)."""
    val_score_by_layer_by_seed: list[list[float]] | None = None
    """Each fine-tune seed's own ``val_score_by_layer`` (several seeds only)."""

    def to_dict(self) -> dict:
        d = {"layer": self.layer, "chosen_on_val": self.chosen_on_val, "val_score_by_layer": self.val_score_by_layer,
             "readout_layers": self.readout_layers}
        if self.val_score_by_layer_by_seed is not None:
            d["val_score_by_layer_by_seed"] = self.val_score_by_layer_by_seed
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LayerChoice:
        return cls(int(d["layer"]), bool(d["chosen_on_val"]), list(d["val_score_by_layer"]),
                   [int(k) for k in d["readout_layers"]], d.get("val_score_by_layer_by_seed"))


@dataclass
class AblationCandidate:
    """One candidate layer's expressed direction, ablated at every block."""

    layer: int
    S_E_val: float
    """Validation expressed separation under the ablation (lower = more suppressed)."""
    kl: float
    """Mean KL(clean || ablated) on the neutral prompts."""

    def to_dict(self) -> dict:
        return {"layer": self.layer, "S_E_val": self.S_E_val, "kl": self.kl}


@dataclass
class AblationChoice:
    """``ablation_choice.json`` (``run.choose_ablation``, Arditi et al.): the candidates and the one chosen."""

    layers: list[int]
    """Candidate layers."""
    val_items: int
    """Validation items scored per candidate."""
    S_E_val_reference: float
    """The reference model's validation expressed separation, unablated."""
    massive_ratio: float | None
    """``arms.massive_ratio`` (None: no massive dims excluded)."""
    excluded_dims: list[int]
    """Residual dims zeroed in every candidate direction (and in the random control's)."""
    candidates: list[AblationCandidate] = field(default_factory=list)
    chosen_layer: int | None = None
    """The candidate within ``arms.kl_max`` that lowers the validation separation most; None: none passed."""

    def to_dict(self) -> dict:
        return {"candidates": [c.to_dict() for c in self.candidates], "layers": self.layers,
                "val_items": self.val_items, "S_E_val_reference": self.S_E_val_reference,
                "massive_ratio": self.massive_ratio, "excluded_dims": self.excluded_dims,
                "chosen_layer": self.chosen_layer}

    @classmethod
    def from_dict(cls, d: dict) -> AblationChoice:
        return cls([int(k) for k in d["layers"]], int(d["val_items"]), d["S_E_val_reference"], d["massive_ratio"],
                   [int(k) for k in d.get("excluded_dims", [])],
                   [AblationCandidate(int(c["layer"]), c["S_E_val"], c["kl"]) for c in d["candidates"]],
                   d["chosen_layer"])

    @property
    def refused(self) -> bool:
        """No candidate passed the KL filter: the ablation arm is not measured."""
        return self.chosen_layer is None
