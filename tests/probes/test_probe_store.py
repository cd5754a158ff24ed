import numpy as np
import pytest
import torch

from undertow.probes import ActivationSource, ProbeError, TensorStore
from undertow.probes.store import resolve_data


def test_synthetic_and_tensor_stores_satisfy_the_protocol(store):
    assert isinstance(store, ActivationSource)
    assert isinstance(TensorStore({"h": torch.zeros(3, 2)}), ActivationSource)
    assert {"label", "template_id", "theme", "split"} <= set(store.rows)


def test_explicit_columns_override_store_rows_and_string_groups_work():
    acts = {"h": torch.randn(6, 3)}
    data = resolve_data(acts, labels=[True, False, True, False, True, False], groups=["a", "a", "b", "b", "c", "c"])
    assert data.labels.tolist() == [1, 0, 1, 0, 1, 0] and data.groups.tolist() == [0, 0, 1, 1, 2, 2]
    st = TensorStore(acts, rows={"label": [0, 1] * 3, "template_id": [0] * 6})
    assert resolve_data(st, labels=[1, 0] * 3).labels.tolist() == [1, 0] * 3


def test_bad_metadata_errors():
    acts = {"h": torch.randn(4, 3)}
    with pytest.raises(ProbeError, match="labels must be 0/1"):
        resolve_data(acts, labels=[0, 2, 1, 0], groups=range(4))
    with pytest.raises(ProbeError, match="no groups"):
        resolve_data(acts, labels=[0, 1, 1, 0])
    with pytest.raises(ProbeError, match="split values"):
        resolve_data(acts, labels=[0, 1, 1, 0], groups=range(4), splits=["train", "dev", "test", "val"])
    with pytest.raises(ProbeError, match="has 4 rows but the metadata has 3"):
        resolve_data(acts, labels=[0, 1, 1], groups=range(3)).load("h")
    with pytest.raises(ProbeError, match=r"expected \[N, D\]"):
        resolve_data({"h": torch.randn(4, 2, 3)}, labels=[0, 1, 1, 0], groups=range(4)).load("h")


def test_numpy_memmap_like_sources_load(tmp_path):
    arr = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float16, shape=(4, 3))
    arr[:] = 1.5
    data = resolve_data(TensorStore({"h": arr}), labels=[0, 1, 0, 1], groups=range(4))
    out = data.load("h", torch.tensor([1, 3]))
    assert out.dtype == torch.float32 and out.shape == (2, 3) and bool((out == 1.5).all())


class _LazyView:
    """Like the activation store's LazyActs: shape + fancy indexing; refuses whole-tensor reads."""

    def __init__(self, t):
        self.t, self.shape, self.reads = t, t.shape, 0

    def __getitem__(self, idx):
        self.reads += len(idx)
        return self.t[torch.as_tensor(idx)]

    def __array__(self, *a, **k):
        raise AssertionError("materialised the whole view")


def test_sweep_reads_only_the_rows_it_uses_from_lazy_views(store):
    from undertow.probes import sweep

    views = {h: _LazyView(store[h]) for h in ("resid_post.1", "resid_post.2")}
    src = TensorStore(views, rows=store.rows, model_fingerprint="fp")
    r = sweep(src, probe_types=("lda",), n_boot=20, n_perm=20)
    used = sum(r.n_rows.values())
    assert all(v.reads == used for v in views.values()) and r.model_fingerprint == "fp"


def test_unlabelled_rows_get_a_specific_message():
    with pytest.raises(ProbeError, match="labels contain -1"):
        resolve_data({"h": torch.zeros(3, 2)}, labels=[0, 1, -1], groups=range(3))
