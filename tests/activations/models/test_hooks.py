from __future__ import annotations

import pytest

from undertow.activations import HookError, parse_hooks
from undertow.activations.models.hooks import HookPoint, all_hook_names


def test_patterns_expand_sorted_and_deduplicated():
    pts = parse_hooks(["resid_post.2-3", "mlp_out.2", "resid_post.3", "embed"], n_layers=4)
    assert [p.name for p in pts] == ["resid_pre.0", "mlp_out.2", "resid_post.2", "resid_post.3"]
    assert [p.name for p in parse_hooks("resid_post.*", 3)] == ["resid_post.0", "resid_post.1", "resid_post.2"]


def test_depth_and_tl_names():
    assert HookPoint(0, "resid_pre").depth == -1
    assert HookPoint(5, "mlp_out").depth == 5
    assert HookPoint(5, "mlp_out").tl_name == "blocks.5.hook_mlp_out"


@pytest.mark.parametrize("bad", ["resid_post.9", "resid_post.3-1", "resid.1", "foo", "", "resid_post.2-9"])
def test_bad_patterns(bad):
    with pytest.raises(HookError):
        parse_hooks([bad] if bad else [], n_layers=4)


def test_all_hook_names_count():
    assert len(all_hook_names(3)) == 1 + 3 * 4
