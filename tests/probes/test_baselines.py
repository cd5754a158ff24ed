import pytest
import torch

from undertow.probes import ProbeError
from undertow.probes.baselines import random_direction_auroc, resolve_lexical, shuffled_label_sets, sign_free


def test_random_directions_are_near_chance_on_noise_and_sign_free():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 2000, 64, generator=g)
    y = (torch.rand(2000, generator=g) < 0.5).float()
    a = random_direction_auroc(X, y, 8, seeds=[1, 2])
    assert a.shape == (2, 8) and bool((a >= 0.5).all()) and float(a.max()) < 0.56
    torch.testing.assert_close(random_direction_auroc(X, y, 8, seeds=[1, 2]), a)  # seeded
    assert sign_free(torch.tensor([0.2, 0.7])).tolist() == pytest.approx([0.8, 0.7])


def test_random_direction_finds_a_one_dimensional_signal_only_by_luck():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(1000, generator=g) < 0.5).float()
    X = torch.randn(1, 1000, 256, generator=g)
    X[0, :, 0] += 3 * y  # strong but 1 of 256 dims
    assert float(random_direction_auroc(X, y, 5, seeds=[0]).mean()) < 0.65


def test_shuffled_labels_keep_class_counts():
    y = torch.tensor([0.0, 1.0] * 50)
    s = shuffled_label_sets(y, torch.arange(100) // 4, 3)
    assert s.shape == (3, 100) and bool((s.sum(1) == 50).all()) and not torch.equal(s[0], y)


def test_lexical_baseline_number_or_callable():
    assert resolve_lexical(None) is None and resolve_lexical(0.7) == 0.7 and resolve_lexical(lambda: 0.55) == 0.55
    with pytest.raises(ProbeError, match="not an AUROC"):
        resolve_lexical(1.3)
    with pytest.raises(ProbeError, match="must be a number, a callable"):
        resolve_lexical("high")

    class LexicalAUROC:  # the shape of undertow.experiments.prompts.audit's result
        mean, std = 0.64, 0.02

    assert resolve_lexical(LexicalAUROC()) == 0.64
    import numpy as np

    assert resolve_lexical(np.float64(0.7)) == 0.7
