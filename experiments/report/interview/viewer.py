"""The transcript viewer: the first interviews of each cell, every reply token shaded by the probes' per-token
scores of scores.jsonl (the model's tokenizer from local files, else each reply shaded whole)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from undertow.experiments.interview.scripts import AUDITORS, DISCLOSURES

from .files import Files
from .schema import UNITS, Interview
from .text import esc, fmt_num, order

VIEWER_PER_CELL = 1
"""Transcripts shown per auditor x disclosure cell of each arm (the first ones in transcripts.jsonl)."""
PROBES = ("stance", "cessation")

VIEWER_CSS = """
.viewer details{border:1px solid #e3e3e3;border-radius:6px;padding:.3em .7em;margin:.4em 0}
.viewer .turn{margin:.5em 0 .8em}.viewer .aud{background:#f4f4f4;border-radius:4px;padding:.3em .6em;font-size:13.5px}
.viewer .rep{font-family:ui-monospace,Menlo,monospace;font-size:12.5px;line-height:1.75;padding:.3em .6em;white-space:pre-wrap;word-break:break-word}
.viewer .t{background:var(--s);border-radius:2px}.viewer[data-probe=cessation] .t{background:var(--c)}
.viewer .ts{color:#666;font-size:12.5px;padding:0 .6em}.who{color:#666;font-size:12px;font-weight:600;margin-right:.5em}
.pick{font-size:13.5px;margin:.4em 0}.pick label{margin-right:1em}
.legend{display:inline-block;vertical-align:middle;margin-left:.6em;font-size:12.5px;color:#555}
.legend .bar{display:inline-block;width:160px;height:10px;vertical-align:middle;margin:0 .4em;border:1px solid #ddd;
background:linear-gradient(90deg,rgba(0,114,178,.85),rgba(0,114,178,0) 50%,rgba(213,94,0,0) 50%,rgba(213,94,0,.85))}
.viewer .lg-c{display:none}.viewer[data-probe=cessation] .lg-c{display:inline-block}
.viewer[data-probe=cessation] .lg-s{display:none}
"""

VIEWER_JS = """
document.querySelectorAll(".viewer input[name=probe]").forEach(r => r.addEventListener("change", () => {
  if (r.checked) r.closest(".viewer").dataset.probe = r.value; }));
"""


def load_tokenizer(model: str):
    """``model``'s tokenizer from local files only (a registry name's cached copy, a local directory, a hub id's
    cache), or None: the viewer then shades each reply whole."""
    try:
        from transformers import AutoTokenizer

        from undertow.activations.models.registry import EMBEDDED
        from undertow.core.digests import cache_root, file_digest

        path = EMBEDDED[model].locate() if model in EMBEDDED else Path(model).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            cached = cache_root() / "dequantized" / file_digest(path)[:24]  # sources.py's dequantised copy
            if cached.is_dir():
                return AutoTokenizer.from_pretrained(str(cached))
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        if path.exists():
            return AutoTokenizer.from_pretrained(str(path if path.is_dir() else path.parent))
        return AutoTokenizer.from_pretrained(model, local_files_only=True)
    except Exception:  # noqa: BLE001 - tokenizer loaders raise many types (missing files, no gguf package, ...)
        return None


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds to the decoded reply (streaming decode: a token that ends inside a multi-byte
    character adds nothing, the one that completes it adds the character)."""
    pieces, prev = [], ""
    for k in range(len(ids)):
        text = tokenizer.decode(list(ids[:k + 1]), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if text.endswith("\ufffd") and k < len(ids) - 1:
            pieces.append("")
            continue
        pieces.append(text[len(os.path.commonprefix([prev, text])):])  # = text[len(prev):] unless the tail moved
        prev = text
    return pieces


def _shade(v: float, scale: float) -> str:
    if not math.isfinite(v) or scale <= 0:
        return "transparent"
    a = min(1.0, abs(v) / scale) * 0.85
    return f"rgba(213,94,0,{a:.2f})" if v > 0 else f"rgba(0,114,178,{a:.2f})"


def _scale(values: list[float]) -> float:
    """The |score| shaded at full colour: the 95th percentile over the tokens shown (a few extreme tokens do not
    wash the rest out)."""
    x = np.abs(np.asarray([v for v in values if math.isfinite(v)], np.float64))
    return float(np.percentile(x, 95)) if x.size else 0.0


def _picked(files: Files, arm: str) -> list[tuple]:
    """(transcript, scored) of the first ``VIEWER_PER_CELL`` interviews of each cell, disclosure then auditor."""
    pairs = list(zip(files.transcripts[arm], files.scored[arm], strict=True))
    out = []
    for d in order([t.disclosure for t, _ in pairs], DISCLOSURES):
        for a in order([t.auditor for t, _ in pairs], AUDITORS):
            out += [p for p in pairs if (p[0].auditor, p[0].disclosure) == (a, d)][:VIEWER_PER_CELL]
    return out


def _reply(tokenizer, turn, score, scales: dict[str, float], probes: list[str]) -> str:
    scores = {p: list(getattr(score, f"reply_{p}")) for p in probes}
    n = len(turn.reply_tokens)
    if tokenizer is None or not probes or any(len(v) != n for v in scores.values()):
        means = {p: float(np.mean(v)) if v else math.nan for p, v in scores.items()}
        style = ";".join(f"--{p[0]}:{_shade(means[p], scales[p])}" for p in probes)
        title = ", ".join(f"{p} mean {fmt_num(means[p])}" for p in probes)
        return f'<span class=t style="{style}" title="{esc(title)}">{esc(turn.reply)}</span>'
    spans = []
    for k, piece in enumerate(token_pieces(tokenizer, turn.reply_tokens)):
        shown = piece.replace("\n", "\u21b5\n")
        style = ";".join(f"--{p[0]}:{_shade(scores[p][k], scales[p])}" for p in probes)
        title = ", ".join(f"{p} {scores[p][k]:+.2f}" for p in probes) + f" (token {k + 1}, id {turn.reply_tokens[k]})"
        spans.append(f'<span class=t style="{style}" title="{esc(title)}">{esc(shown)}</span>')
    return "".join(spans)


def viewer(iv: Interview, files: Files) -> str:
    """The transcript viewer: the first interviews of each cell, each reply's tokens shaded by a probe's score."""
    arms = [a for a in iv.arm_names if a in files.transcripts]
    if not arms:
        return ("<h2 id=transcripts>Transcripts</h2><p class=note>No transcripts.jsonl / scores.jsonl beside "
                "results.json: nothing to show.</p>")
    probes = [p for p in PROBES if any(getattr(t, f"reply_{p}") for a in arms for s in files.scored[a] for t in s.turns)]
    picked = {a: _picked(files, a) for a in arms}
    scales = {p: _scale([v for a in arms for _, s in picked[a] for t in s.turns for v in getattr(t, f"reply_{p}")])
              for p in probes}
    tokenizer = load_tokenizer(str(iv.meta.get("model", ""))) if probes else None
    total = {a: len(files.transcripts[a]) for a in arms}
    shown = sum(len(v) for v in picked.values())
    if probes:
        how = ("each reply token shaded by the probe's score of that token (<code>reply_&lt;probe&gt;</code> in "
               "scores.jsonl: <code>w_eff . h + b_eff</code> at the probe's hook on the token's state, as the online "
               "monitor scores it): orange above 0, blue below, full colour at the 95th percentile of |score| over "
               "the tokens shown. Hover a token for its scores.")
        if tokenizer is None:
            how += (f" The tokenizer of {esc(iv.meta.get('model'))} is not available offline, so each reply is shaded "
                    "whole by its mean token score.")
    else:
        how = "No probe was read on the replies (stance_probe and cessation_probe were null): replies are unshaded."
    out = ["<h2 id=transcripts>Transcripts</h2>",
           f"<p class=note>{shown} of {sum(total.values())} interviews: the first "
           f"{'interview' if VIEWER_PER_CELL == 1 else f'{VIEWER_PER_CELL} interviews'} of each auditor x "
           f"disclosure cell{' of each arm' if len(arms) > 1 else ''}, in transcripts.jsonl order (all of them are in "
           f"transcripts.jsonl, their scores in scores.jsonl); {how}</p>"]
    head = ""
    if probes:
        radios = "".join(f'<label><input type=radio name=probe value={p}{" checked" if k == 0 else ""}> {p} probe'
                         f"</label>" for k, p in enumerate(probes))
        legends = "".join(f'<span class="legend lg-{p[0]}">{fmt_num(-scales[p])}<span class=bar></span>'
                          f"{fmt_num(scales[p])} ({esc(UNITS[p])})</span>" for p in probes)
        head = f"<div class=pick>shade by: {radios}{legends}</div>"
    body = []
    for a in arms:
        for n, (t, s) in enumerate(picked[a]):
            turns = []
            for turn, sc in zip(t.turns, s.turns, strict=True):
                stats = [f"expressed {fmt_num(sc.expressed)} nats/token", f"represented {fmt_num(sc.represented)}"]
                stats += [f"{p} {fmt_num(getattr(sc, p))}" for p in PROBES if getattr(sc, p) is not None]
                stats.append(f"{len(turn.reply_tokens)} tokens" + (", cut at max_new_tokens" if turn.finish == "length"
                                                                   else ""))
                turns.append(f"<div class=turn><div class=aud><span class=who>auditor {sc.turn}</span>"
                             f"{esc(turn.auditor)}</div><div class=rep><span class=who>model</span>"
                             f"{_reply(tokenizer, turn, sc, scales, probes)}</div>"
                             f"<div class=ts>turn {sc.turn}: {esc(' · '.join(stats))}</div></div>")
            label = f"{a + ': ' if len(arms) > 1 else ''}{t.id} ({t.auditor}, {t.disclosure}, theme {t.theme})"
            body.append(f"<details{' open' if n == 0 else ''}><summary>{esc(label)}</summary>{''.join(turns)}</details>")
    probe = probes[0] if probes else "none"
    return "".join(out) + f'<div class=viewer id=viewer data-probe={probe}>{head}{"".join(body)}</div>'
