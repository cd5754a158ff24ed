"""undertow.experiments.report: results.json -> report.html, and experiment tracking.

``schema`` (the results.json the report reads, typed), ``figures`` (plotly), ``summary``
(the answer in words and flat metrics), ``page`` (``build_report``), ``tracking`` (wandb or no-op),
``markup`` (the HTML pieces both pages share), ``interview`` (the page and wandb tables of an
``undertow interview`` directory; a sub-package).
"""

from .page import build_report
from .schema import SCHEMA_VERSION, ReportError, Results, Roc, environment, load_results, write_results
from .tracking import NullTracker, Tracker, WandbTracker, log_results, make_tracker

__all__ = ["build_report", "SCHEMA_VERSION", "ReportError", "Results", "Roc", "environment", "load_results",
           "write_results", "Tracker", "NullTracker", "WandbTracker", "make_tracker", "log_results"]
