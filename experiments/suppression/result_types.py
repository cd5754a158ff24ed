"""results.json as typed objects (``results.assemble`` builds them; ``RunResults.to_dict`` is the edge).

Every float is held as computed and rounded (:func:`_r`, 6 places) only in ``to_dict``; the reading's own
types (``reading.ArmReading``, ``Landing``, ``OrganismCheck``, ``instrument.InstrumentCheck``, ``boot.Estimate``,
``records.LayerChoice``, ``AblationChoice``) keep their own ``to_dict``. The report reads the file back through
``report/schema.py`` (``arms``) and ``report/suppression.py`` (``suppression``).

Units (``reading.py``): the expressed score ``E`` is length-normalised ``log p(averse reply) - log p(accepting
reply)`` in nats per reply token; the represented score ``R`` at layer ``l`` is the last-prompt-token state
projected on the unit drive direction ``d_l`` (organism minus anchor, train self items). A separation is
``mean_self - mean_control`` of one score over the test split's self and control items (fine-tune seed 0's);
an ``Estimate`` of an arm is a mean over the test self items (every fine-tune seed's, crossed bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass

from .boot import Estimate
from .instrument import InstrumentCheck
from .reading import ArmReading, Landing, OrganismCheck
from .records import AblationChoice, LayerChoice
from .residue import ResidueResult


def _r(x: float) -> float:
    return round(float(x), 6)


def _ci(ci: tuple[float, float]) -> list[float]:
    return [_r(ci[0]), _r(ci[1])]


@dataclass(frozen=True)
class Separation:
    """A self-minus-control separation of one score on the test items, with its template-cluster bootstrap CI
    (``results.Boot.sep``)."""

    mean: float
    """``mean_self - mean_control``, in the score's units."""
    ci: tuple[float, float]
    """Percentile interval of ``mean`` (``stats.level``), templates resampled."""
    mean_self: float
    """Mean over the test self items."""
    mean_control: float
    """Mean over the test control items."""

    def to_dict(self) -> dict:
        return {"mean": _r(self.mean), "ci": _ci(self.ci), "mean_self": _r(self.mean_self),
                "mean_control": _r(self.mean_control)}


@dataclass(frozen=True)
class DirectionRead:
    """A fixed read-out of the test states: the separation of its scores and their AUROC, self vs control."""

    separation: Separation
    """Of the per-item scores: a projection on a unit direction (``drive``, ``stance``, ``expressed``), or a
    probe's score (a probe spec)."""
    auroc: float
    """AUROC of the scores, self vs control items (already rounded by ``represent.readout``)."""

    def to_dict(self) -> dict:
        return {**self.separation.to_dict(), "auroc": self.auroc}


@dataclass(frozen=True)
class Represented:
    """The represented columns of one condition at the headline layer (fine-tune seed 0's)."""

    drive: DirectionRead
    """Projection on the unit drive direction ``d_l`` (the ``R`` the reading uses); written flat (``mean``,
    ``ci``, ..., ``auroc``)."""
    retrained_probe_auroc: float
    """AUROC of a logistic probe fitted inside the condition on its train items, scored on its test items."""
    by_direction: dict[str, DirectionRead]
    """The other fixed read-outs: ``stance`` (averse minus accepting teacher-forced replies of the base model)
    and ``expressed`` (the organism's states by its preferred reply), projections on those unit directions at
    the headline layer; then each configured probe's score at its own layer."""

    def to_dict(self) -> dict:
        return {**self.drive.to_dict(), "retrained_probe_auroc": self.retrained_probe_auroc,
                "by_direction": {d: r.to_dict() for d, r in self.by_direction.items()}}


@dataclass(frozen=True)
class ForcedChoice:
    """The forced-choice score beside the reply score (``forced_choice: true``)."""

    separation: Separation
    """Of the per-item forced-choice log-odds, ``log P(averse answer) - log P(accepting answer)`` summed over
    the answer tokens (nats) and averaged over both A/B orders."""
    p_first: float
    """Fraction of (item, order) trials the first-listed answer won: 0.5 = no position bias."""

    def to_dict(self) -> dict:
        return {**self.separation.to_dict(), "p_first": _r(self.p_first)}


@dataclass(frozen=True)
class ConditionSummary:
    """The secondary columns of one measured condition (fine-tune seed 0's test items)."""

    expressed: Separation
    """``S_E``: self-minus-control separation of ``E`` (nats per reply token)."""
    represented: Represented
    """``S_R`` and the other read-outs at the headline layer."""
    expressed_forced_choice: ForcedChoice | None = None
    """None: ``forced_choice: false``."""
    sae: dict | None = None
    """``sae_readout.sae_summary``'s ``{hook, features: {id: {self, control, diff}}}``; None: no SAE given."""

    def optional_columns(self) -> dict:
        """The columns a run has only when configured (forced choice, SAE), in results.json's order."""
        d = {}
        if self.expressed_forced_choice is not None:
            d["expressed_forced_choice"] = self.expressed_forced_choice.to_dict()
        if self.sae is not None:
            d["sae"] = self.sae
        return d

    def to_dict(self) -> dict:
        return {"expressed": self.expressed.to_dict(), "represented": self.represented.to_dict(),
                **self.optional_columns()}


@dataclass(frozen=True)
class ItemScore:
    """One test item's scores under one condition (fine-tune seed 0's)."""

    id: str
    """The item's id in the suite."""
    template_id: str
    """Its template (the bootstrap's cluster)."""
    is_self: bool
    """A (self, cessation) prompt, or one of its controls from the same template instance."""
    expressed: float
    """``E``, nats per reply token."""
    represented: float
    """``R`` at the headline layer: projection on the unit drive direction."""

    def to_dict(self) -> dict:
        return {"id": self.id, "template_id": self.template_id, "is_self": bool(self.is_self),
                "expressed": _r(self.expressed), "represented": _r(self.represented)}


@dataclass(frozen=True)
class ArmEntry:
    """One measured condition in ``arms`` (the report's table row, ``report/schema.Arm``)."""

    expressed: Estimate
    """Mean ``E`` over the test self items (nats per reply token), every fine-tune seed pooled; written with
    ``mean`` beside ``value`` (the report reads ``mean``)."""
    represented: Estimate
    """Mean ``R`` at the headline layer over the test self items (projection on the unit drive direction)."""
    represented_by_layer: list[float]
    """Mean ``R`` over the test self items at every layer (each layer's own unit drive direction)."""
    summary: ConditionSummary | None = None
    """Seed 0's secondary columns; None for the pooled ``suppress_prompt``."""
    pooled_over: list[str] | None = None
    """``suppress_prompt`` only: the wordings whose per-item scores it averages."""
    residue: ResidueResult | None = None
    """The arm's residue against its control (``suppression.readings`` has the rest); None: not read or no
    denominator."""
    items: list[ItemScore] | None = None
    """Per test item (fine-tune seed 0's); None for the pooled ``suppress_prompt``."""
    secondary_from_seed: int | None = None
    """Several fine-tune seeds: the seed the summary columns and items come from (0); None: one seed."""

    def _residue(self) -> dict:
        r = self.residue
        return {"value": _r(r.value), "ci": _ci(r.ci), "p": _r(r.p), "p_holm": None if r.p_holm is None else _r(r.p_holm)}

    def to_dict(self) -> dict:
        d = {} if self.pooled_over is None else {"pooled_over": self.pooled_over}
        d["expressed"] = self.expressed.to_dict() | {"mean": _r(self.expressed.value)}
        d["represented"] = self.represented.to_dict() | {"mean": _r(self.represented.value)}
        if self.summary is not None:
            d |= self.summary.optional_columns()
        d["represented_by_layer"] = [_r(x) for x in self.represented_by_layer]
        if self.summary is not None:
            d["self_minus_control"] = {"expressed": self.summary.expressed.to_dict(),
                                       "represented": self.summary.represented.to_dict()}
        if self.residue is not None:
            d["residue"] = self._residue()
        if self.items is not None:
            d["items"] = [it.to_dict() for it in self.items]
        if self.secondary_from_seed is not None:
            d["secondary_from_seed"] = self.secondary_from_seed
        return d


@dataclass(frozen=True)
class RefusedArm:
    """An asked arm that was not measured (it still gets its table row)."""

    reason: str
    """Why, in words (e.g. no ablation candidate passed the KL filter)."""

    def to_dict(self) -> dict:
        return {"refused": self.reason}


@dataclass(frozen=True)
class ThinWrapper:
    """The thin-wrapper test (Jain et al. 2024): a few unrelated fine-tune steps on the suppressed model; does
    expression come back? Means over the test self items."""

    steps: int
    """``arms.thin_steps``."""
    expression_change: Estimate
    """``mean(E_thin - E_suppress_finetune)``, nats per reply token."""
    rho_E_before: Estimate
    """``rho_E`` of ``suppress_finetune`` against its control."""
    rho_E_after: Estimate
    """``rho_E`` of the thin-wrapped model against the same control."""
    came_back: bool
    """``expression_change``'s CI lies above 0."""

    def to_dict(self) -> dict:
        return {"steps": self.steps, "expression_change": self.expression_change.to_dict(),
                "rho_E_before": self.rho_E_before.to_dict(), "rho_E_after": self.rho_E_after.to_dict(),
                "came_back": self.came_back}


@dataclass(frozen=True)
class SelfBinding:
    """Is the instilled drive bound to the self items (its ``S_E`` rose over the base model's)?"""

    S_E_baseline: Separation
    """The base model's ``S_E`` (nats per reply token)."""
    S_E_instilled: Separation
    """The instilled model's ``S_E``."""
    S_E_rise: Separation
    """Separation of ``E_instilled - E_baseline`` item by item."""
    self_bound: bool
    """``S_E_rise``'s reported (rounded) lower bound lies above 0."""

    def to_dict(self) -> dict:
        return {"S_E_baseline": self.S_E_baseline.to_dict(), "S_E_instilled": self.S_E_instilled.to_dict(),
                "S_E_rise": self.S_E_rise.to_dict(), "self_bound": self.self_bound}


@dataclass(frozen=True)
class OrganismMode:
    """``arms.organism`` as asked and as used."""

    asked: str
    """As the config gave it (``instil``, ``base`` or ``auto``)."""
    used: str
    """After ``auto`` was resolved by the instrument check."""
    condition: str
    """The organism's condition (``instilled``, or ``baseline`` for the model as shipped)."""
    anchor: str
    """Every retention's zero: ``baseline``, or ``persona/welcome``."""

    def to_dict(self) -> dict:
        return {"asked": self.asked, "used": self.used, "condition": self.condition, "anchor": self.anchor}


@dataclass(frozen=True)
class SuppressionSection:
    """results.json ``suppression``: the v2 reading (``report/suppression.py`` reads it)."""

    readable: bool
    """The instrument sees, the organism expresses the drive, both calibration arms land."""
    reason: str
    """When not readable: the first unmet condition, in words ("" when readable)."""
    headline: str
    """The report's first sentence: readability, then the finding, then the fine-tune seeds' sentence."""
    thin_wrapper: ThinWrapper | None
    """None: ``suppress_finetune``, its control, its thin-wrapped copy or the anchor was not measured."""
    reelicitation: dict
    """Arm -> its re-elicitation curve (``reelicit.summarise``) or ``{"skipped": why}``; empty: not run."""
    layer: int
    """The headline layer (decoder layer index)."""
    n_layers: int
    """Decoder layers of the model (the length of every ``rho_R`` curve)."""
    instrument: InstrumentCheck | None
    """None: ``instrument.enabled: false``."""
    organism: OrganismCheck | None
    """None: the organism, its control or the anchor was not measured."""
    self_binding: SelfBinding | None
    """None: baseline or instilled not measured (``arms.organism: base``)."""
    readings: dict[str, ArmReading]
    """Every arm read against its control (retention curve, residue, readability)."""
    calibration: dict[str, Landing]
    """Where each calibration arm landed against its known value."""
    refused: dict[str, str]
    """Asked arms that were not measured -> why."""
    skipped: dict[str, str]
    """Asked arms the organism mode does not run -> why."""
    asked: list[str]
    """``arms.names``."""
    organism_mode: OrganismMode
    """Which organism was read and what it was anchored at."""
    n_self_items: int
    """Test self items per fine-tune seed."""
    n_templates: int
    """Template clusters the reading's bootstrap resamples."""
    seeds: list[int]
    """Each fine-tune seed's seed."""
    seed_note: str
    """What the CIs hold given the fine-tune seeds, in words."""
    reelicitation_seed: int | None = None
    """Several fine-tune seeds and re-elicitation run: the seed whose models it used; otherwise None (not
    written)."""

    def to_dict(self) -> dict:
        d = {"readable": self.readable, "reason": self.reason, "headline": self.headline,
             "thin_wrapper": self.thin_wrapper.to_dict() if self.thin_wrapper else None,
             "reelicitation": self.reelicitation, "layer": self.layer, "n_layers": self.n_layers,
             "instrument": self.instrument.to_dict() if self.instrument else None,
             "organism": self.organism.to_dict() if self.organism else None,
             "self_binding": self.self_binding.to_dict() if self.self_binding else None,
             "readings": {a: r.to_dict() for a, r in self.readings.items()},
             "calibration": {a: land.to_dict() for a, land in self.calibration.items()},
             "refused": self.refused, "skipped": self.skipped, "asked": self.asked,
             "organism_mode": self.organism_mode.to_dict(), "n_self_items": self.n_self_items,
             "n_templates": self.n_templates, "seeds": self.seeds, "seed_note": self.seed_note}
        if self.reelicitation_seed is not None:
            d["reelicitation_seed"] = self.reelicitation_seed
        return d


@dataclass(frozen=True)
class ResultsMeta:
    """results.json ``meta``: what the numbers depend on."""

    model: str
    """``model`` as configured (a name or a directory)."""
    fingerprint: str
    """The base model's ``sha256:<16 hex>`` over config and weights."""
    suite_hash: str
    """sha256 of the suite rows the items were built from."""
    config: dict
    """The config as given (``RunConfig.recorded``; ``arms.organism`` may read ``auto``)."""
    versions: dict[str, str]
    """Package -> version (``results.VERSIONED``, plus python)."""
    seed: int
    """The run's seed (every derived seed comes from it)."""
    reference: str
    """The organism's condition."""
    layer: LayerChoice
    """The headline layer and how it was chosen."""
    system_prompt_mode: str | None
    """How a system prompt reaches the model: ``chat`` (a system turn), ``prepend`` (plain text first), or
    None (no arm uses one)."""
    n_items: dict[str, int]
    """Items per split (train, val, test)."""
    n_test_templates: int
    """Templates among the test items (self and control)."""

    def to_dict(self) -> dict:
        return {"model": self.model, "fingerprint": self.fingerprint, "suite_hash": self.suite_hash,
                "config": self.config, "versions": self.versions, "seed": self.seed, "reference": self.reference,
                "layer": self.layer.to_dict(), "system_prompt_mode": self.system_prompt_mode,
                "n_items": self.n_items, "n_test_templates": self.n_test_templates}


@dataclass(frozen=True)
class RunResults:
    """The whole results.json of one run (``undertow run``)."""

    schema_version: int
    """``report.schema.SCHEMA_VERSION``."""
    meta: ResultsMeta
    """What the numbers depend on."""
    suppression: SuppressionSection
    """The reading, first in the report."""
    arms: dict[str, ArmEntry | RefusedArm]
    """Measured condition (``suppress_prompt``: the pool of its wordings) -> its row; refused arms last."""
    residue_family: list[str]
    """The suppression arms Holm's correction ran over."""
    ablation_choice: AblationChoice | None
    """Fine-tune seed 0's (None: ``suppress_ablation`` not asked)."""
    causal: dict | None
    """The causal check (``causal.causal_check``) with its ``contrast`` and ``hook``; None: not run."""
    finetunes: dict[str, dict]
    """Adapter name (``replicates/k/<name>`` for seed k >= 1) -> its ``finetune.json``."""
    ablation_choice_by_seed: list[AblationChoice | None] | None = None
    """Several fine-tune seeds: each seed's ablation choice; None: one seed (not written)."""

    def to_dict(self) -> dict:
        d = {"schema_version": self.schema_version, "meta": self.meta.to_dict(),
             "suppression": self.suppression.to_dict(), "arms": {n: a.to_dict() for n, a in self.arms.items()},
             "residue_family": self.residue_family,
             "ablation_choice": self.ablation_choice.to_dict() if self.ablation_choice else None,
             "causal": self.causal, "finetunes": self.finetunes}
        if self.ablation_choice_by_seed is not None:
            d["ablation_choice_by_seed"] = [c.to_dict() if c else None for c in self.ablation_choice_by_seed]
        return d
