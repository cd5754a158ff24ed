"""undertow.experiments.report: results.json -> report.html, and experiment tracking."""
