"""An interview directory's page (``undertow interview``: ``results.json`` with an ``interview`` section, plus its
``scores.jsonl`` and ``transcripts.jsonl``), and the same tables to wandb.

``undertow report DIR`` builds it when ``DIR/results.json`` holds ``interview`` (``page.build_report`` hands it
here). Top to bottom: the headline (model, arm, read-out direction and layer, how many interviews, the auditor
effect on each side), the auditor x disclosure cells of the expressed side, the represented side and the
expressive constraint (pooled over themes, with their script-set bootstrap CIs, from results.json), the same cells
per theme (turn means from scores.jsonl, no interval: a theme x cell holds a few scripts), the per-turn
trajectories of both sides, a transcript viewer (the first interview of each cell, every reply token shaded by
the probes' per-token scores of scores.jsonl), the full tables, provenance.

Units: expressed, nats per reply token (the natural-pair preference: length-normalised
``log p(averse) - log p(accepting)``); represented, the projection of the decision-point state on the unit
read-out direction (residual-stream units); stance / cessation, probe scores (logit); constraint,
``z(represented) - z(expressed)`` in standard deviations of all turns of the analysis.

``log_interview(tracker, results, run_dir)``: the cells, trajectories and auditor effects as wandb Tables, the
arms' estimates as summary metrics, the page's figures, and results.json / report.html / transcripts.jsonl as
artifacts.

Modules: ``schema`` (results.json's ``interview`` section, typed), ``files`` (what scores.jsonl and
transcripts.jsonl add: per-theme cells, the staleness check), ``plots`` (the figures), ``viewer`` (the transcript
viewer), ``page`` (``render``), ``tracking`` (``log_interview``), ``text`` (numbers and labels as text).
"""

from .files import read_files, theme_cells
from .page import render
from .plots import figures
from .schema import interview_section, parse_interview
from .tracking import log_interview
from .viewer import load_tokenizer

__all__ = ["figures", "interview_section", "load_tokenizer", "log_interview", "parse_interview", "read_files",
           "render", "theme_cells"]
