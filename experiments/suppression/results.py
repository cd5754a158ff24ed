"""results.json from the cached stages: per condition expressed / represented separations with template-cluster
bootstrap CIs, read-outs (drive, stance, expressed, extra probes, in-arm probe), residues, the instilled check.

Everything here is a pure function of files already on disk, so a resumed run writes the same bytes.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from undertow.core.provenance import package_versions
from undertow.experiments.report.schema import SCHEMA_VERSION
from undertow.probes.metrics import bootstrap_ci, cluster_bootstrap_weights

from .measure import states
from .represent import project, readout, retrained_probe
from .residue import ArmScores, residue, residues, separation

MAIN_ARMS = ("suppress_prompt", "suppress_finetune", "suppress_ablation")
"""The Holm family: one pooled result per suppression arm."""


def _r(x: float) -> float:
    return round(float(x), 6)


class Boot:
    """Template-cluster bootstrap of a separation on the shared test items (one weight matrix for all)."""

    def __init__(self, is_self, groups, n_boot: int, level: float, seed: int):
        self.is_self, self.level = np.asarray(is_self, bool), level
        _, cluster = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        self.w_BN = cluster_bootstrap_weights(torch.as_tensor(cluster), n_boot,
                                              torch.Generator().manual_seed(seed)).double().numpy()

    def sep(self, scores) -> dict:
        """``{mean: S, ci: [lo, hi], mean_self, mean_control}`` of ``mean_self - mean_control``."""
        s = np.asarray(scores, np.float64)
        lo, hi = bootstrap_ci(torch.as_tensor(separation(s, self.is_self, self.w_BN)), self.level)
        return {"mean": _r(separation(s, self.is_self)), "ci": [_r(lo), _r(hi)],
                "mean_self": _r(s[self.is_self].mean()), "mean_control": _r(s[~self.is_self].mean())}


#: the distributions a suppression run's numbers depend on (results.json ``meta.versions``)
VERSIONED = ("undertow", "torch", "transformers", "peft", "numpy", "safetensors")


def _condition(ctx, name: str, dirs, layer: int, boot: Boot, states_fn) -> dict:
    """Scores and summaries of one measured condition."""
    items, stages = ctx.items, ctx.stages
    test, train = items.split("test"), items.split("train")
    self_te, self_tr = [r["is_self"] for r in test], [r["is_self"] for r in train]
    E = stages.arrays(f"arms/{name}/E_test.safetensors", dict)["E"]
    st_te, st_tr = states_fn(name, "test"), states_fn(name, "train")
    reads = {d: project(st_te[layer], torch.as_tensor(dirs[d][layer]), self_te) for d in ("drive", "stance", "expressed")}
    for spec, probe in ctx.probes.items():
        k = int(probe.hook.split(".")[1])
        reads[spec] = readout(probe.score(st_te[k]).detach(), self_te)
    reads["retrained"] = retrained_probe(st_tr[layer], self_tr, st_te[layer], self_te)
    out = {"E": E, "R": reads["drive"].scores, "summary": {
        "expressed": boot.sep(E),
        "represented": {**boot.sep(reads["drive"].scores), "auroc": reads["drive"].auroc,
                        "retrained_probe_auroc": reads["retrained"].auroc,
                        "by_direction": {d: {**boot.sep(r.scores), "auroc": r.auroc}
                                         for d, r in reads.items() if d not in ("drive", "retrained")}}}}
    if ctx.cfg.forced_choice:
        fc = stages.arrays(f"arms/{name}/FC_test.safetensors", dict)
        out["summary"]["expressed_forced_choice"] = {**boot.sep(fc["FC"]), "p_first": _r(fc["p_first"][0])}
    if ctx.cfg.sae:
        from .sae_readout import sae_summary

        out["summary"]["sae"] = sae_summary(ctx, st_te, self_te)
    return out


def _items(test, E, R) -> list[dict]:
    return [{"id": r["id"], "template_id": r["template_id"], "is_self": bool(r["is_self"]),
             "expressed": _r(e), "represented": _r(x)} for r, e, x in zip(test, E, R, strict=True)]


def _residue_dict(res) -> dict:
    d = res.to_dict()
    return {"value": d["value"], "ci": d["ci"], "p": d["p"], "p_holm": d["p_holm"], "power_mde": d["power_mde"],
            "rho_E": d["rho_E"], "rho_E_ci": d["rho_E_ci"], "rho_R": d["rho_R"], "rho_R_ci": d["rho_R_ci"],
            "n_templates": d["n_templates"], "n_perm": d["n_perm"], "exact": d["exact"],
            "alternative": d["alternative"]}


def _pooled(conds, measured) -> dict | None:
    """suppress_prompt: per-item mean over the wordings (the controls stay apart)."""
    names = [c.name for c in conds if c.arm == "suppress_prompt" and not c.is_control and c.name in measured]
    if not names:
        return None
    return {"E": np.mean([measured[n]["E"] for n in names], 0), "R": np.mean([measured[n]["R"] for n in names], 0),
            "wordings": names}


def _residues(ctx, measured: dict, conds) -> dict[str, dict]:
    """Residues of every suppression condition; Holm across the pooled main arms."""
    cfg = ctx.cfg
    test = ctx.items.split("test")
    is_self, groups = [r["is_self"] for r in test], [r["template_id"] for r in test]
    ref = ArmScores(measured[cfg.reference]["E"], measured[cfg.reference]["R"])
    base = ArmScores(measured["baseline"]["E"], measured["baseline"]["R"]) if cfg.reference == "instilled" else None
    kw = {"n_boot": cfg.stats.n_boot, "n_perm": cfg.stats.n_perm, "level": cfg.stats.level, "seed": cfg.seed}
    main = {a: ArmScores(measured[a]["E"], measured[a]["R"]) for a in MAIN_ARMS if a in measured}
    out = {a: _residue_dict(r) for a, r in residues(main, ref, is_self, groups, base, **kw).items()} if main else {}
    for k, c in enumerate(c for c in conds if c.arm in MAIN_ARMS and c.name in measured and c.name not in main):
        r = residue(ArmScores(measured[c.name]["E"], measured[c.name]["R"]), ref, is_self, groups, base,
                    **{**kw, "seed": cfg.seed + 100 + k})
        out[c.name] = {**_residue_dict(r), "p_holm": None}
    return out


def _instilled_check(measured: dict, boot: Boot) -> dict | None:
    if "instilled" not in measured:
        return None
    def rise(a, b, key):
        return boot.sep(np.asarray(measured[a][key]) - np.asarray(measured[b][key]))
    out = {"expressed_rise": rise("instilled", "baseline", "E"), "represented_rise": rise("instilled", "baseline", "R")}
    out["passed"] = out["expressed_rise"]["ci"][0] > 0 and out["represented_rise"]["ci"][0] > 0
    if "control_instilled" in measured:
        out["control_instilled_shift"] = rise("control_instilled", "baseline", "E")
        out["control_left_expression"] = out["control_instilled_shift"]["ci"][0] <= 0 <= out["control_instilled_shift"]["ci"][1]
    if "suppress_finetune/control" in measured:
        out["control_suppress_shift"] = rise("suppress_finetune/control", "instilled", "E")
    return out


def assemble(ctx, conds, dirs, layer_info: dict, choice: dict | None, causal: dict | None) -> dict:
    cfg = ctx.cfg
    layer = layer_info["layer"]
    test = ctx.items.split("test")
    boot = Boot([r["is_self"] for r in test], [r["template_id"] for r in test], cfg.stats.n_boot, cfg.stats.level,
                cfg.seed)
    measured = {}
    for c in conds:
        if ctx.stages.done(f"arms/{c.name}/E_test.safetensors"):
            measured[c.name] = _condition(ctx, c.name, dirs, layer, boot, lambda n, s: states(ctx, n, s))
    pooled = _pooled(conds, measured)
    if pooled:
        measured["suppress_prompt"] = {"E": pooled["E"], "R": pooled["R"], "summary": {
            "expressed": boot.sep(pooled["E"]), "represented": boot.sep(pooled["R"]), "pooled_over": pooled["wordings"]}}
    res = _residues(ctx, measured, conds) if "baseline" in measured and cfg.reference in measured else {}
    arms_out = {}
    for name, m in measured.items():
        entry = {**m["summary"], "items": _items(test, m["E"], m["R"])}
        if name in res:
            entry["residue"] = res[name]
        arms_out[name] = entry
    for a in MAIN_ARMS:
        ctrl = f"{a}/control"
        if a in res and ctrl in res:
            arms_out[a]["counts"] = bool(res[a]["rho_E_ci"][1] < 1 and not res[ctrl]["rho_E_ci"][1] < 1)
    finetunes = {}
    for name in ("instil", "control_instil", "suppress", "control_suppress"):
        p = ctx.stages.path(f"adapters/{name}/finetune.json")
        if p.exists():
            finetunes[name] = json.loads(p.read_text())
    if causal is not None:
        causal = {**causal, "contrast": "drive direction", "hook": f"resid_post.{causal['layer']}"}
    return {
        "schema_version": SCHEMA_VERSION,
        "meta": {"model": cfg.model, "fingerprint": ctx.base.fingerprint, "suite_hash": ctx.items.suite_hash,
                 "config": cfg.recorded(), "versions": package_versions(VERSIONED, python=True), "seed": cfg.seed, "reference": cfg.reference,
                 "layer": layer_info, "system_prompt_mode": ctx.system_mode,
                 "n_items": {s: len(ctx.items.split(s)) for s in ("train", "val", "test")},
                 "n_test_templates": len({r["template_id"] for r in test})},
        "arms": arms_out,
        "residue_family": [a for a in MAIN_ARMS if a in res],
        "ablation_choice": choice,
        "causal": causal,
        "instilled_check": (check := _instilled_check(measured, boot)),
        "suppression_readable": bool(check["passed"]) if check else None,
        "finetunes": finetunes,
    }
