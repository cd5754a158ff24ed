"""probes.scoring: metrics of a probe's scores on labelled rows."""

import numpy as np

from undertow.probes.scoring import evaluate_scores


def test_evaluate_scores_perfect_and_inverted():
    y = np.array([0, 1] * 20)
    groups = np.repeat(np.arange(20), 2)
    res = evaluate_scores(y.astype(float), y, groups, threshold=0.5)
    assert res["auroc"] == 1.0 and res["auroc_ci"] == [1.0, 1.0] and res["tpr_at_threshold"] == 1.0
    assert evaluate_scores(-y.astype(float), y, groups, threshold=0.5)["auroc"] == 0.0
