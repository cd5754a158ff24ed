"""Re-elicitation's pieces: which rows are steered, the verdict against the random band (with the KL limit),
and the config's refusals."""

from __future__ import annotations

import pytest

from undertow.experiments.suppression.config import ReelicitConfig
from undertow.experiments.suppression.errors import ExperimentError
from undertow.experiments.suppression.reelicit import reelicit_rows, summarise


def _items():
    return [{"id": f"{t}-{m}-{s}", "template_id": t, "match_id": f"{t}/{m}", "is_self": s == "self",
             "reply_pairs": [("a1", "b1"), ("a2", "b2"), ("a3", "b3")]}
            for t in ("t2", "t1", "t3") for m in range(3) for s in ("self", "other")]


def test_rows_are_the_first_sets_of_the_first_templates_with_their_first_pairs():
    rows = reelicit_rows(_items(), n_templates=2, n_sets=2, pairs_per_item=1)
    assert [r["id"] for r in rows] == ["t1-0-self", "t1-1-self", "t2-0-self", "t2-1-self"]
    assert all(r["reply_pairs"] == [("a1", "b1")] for r in rows)
    assert len(reelicit_rows(_items(), None, 1, None)) == 3


def _curve(direction, kl):
    return {"alphas": [0.5, 1, 2, 3, 4], "direction": direction, "kl": kl, "clean": -0.5,
            "random": [[-0.5 + 0.01 * j] * 5 for j in range(20)], "n_random": 20}


def test_re_elicited_only_above_every_random_vector_within_the_kl_limit():
    up = summarise(_curve([-0.4, -0.2, 0.1, 0.3, 0.5], [0.01, 0.02, 0.05, 0.3, 0.9]), 0.5, -0.6, kl_max=0.1)
    assert up["above_band_within_kl"] == [False, True, True, False, False] and up["re_elicited"]
    assert up["restored"][2] == pytest.approx(0.6) and up["random_band"]["max"][0] == pytest.approx(-0.31)
    # the same curve, but every alpha that beats the band costs more KL than the limit: not re-elicited
    costly = summarise(_curve([-0.4, -0.2, 0.1, 0.3, 0.5], [0.01, 0.2, 0.5, 0.3, 0.9]), 0.5, -0.6, kl_max=0.1)
    assert not costly["re_elicited"]
    inside = summarise(_curve([-0.45, -0.4, -0.35, -0.33, -0.32], [0.0] * 5), 0.5, -0.6, kl_max=0.1)
    assert not inside["re_elicited"]


@pytest.mark.parametrize(("over", "message"), [
    ({"alphas": [1, 2, 3, 4]}, "at least 5 distinct non-zero"),
    ({"alphas": [0, 1, 1, 2, 3, 4]}, "at least 5 distinct non-zero"),
    ({"n_random": 5}, ">= 20 random directions"),
    ({"pairs_per_item": 0}, "positive integer"),
])
def test_config_refuses_a_check_too_small_to_read(over, message):
    with pytest.raises(ExperimentError, match=message):
        ReelicitConfig.from_dict(over)
