"""The engine on the tiny models: exact positions under batching, order, NaN reporting, bad inputs."""

from __future__ import annotations

import functools

import datasets
import pytest
import torch

from undertow.activations import (
    ActivationStore,
    DatasetError,
    ExtractConfig,
    HookError,
    NonFiniteWarning,
    PositionError,
    StoreWriteError,
    capture_hf,
    extract,
    render_row,
)
from undertow.activations.engine.batching import bucket_batches, padding_fraction
from undertow.core.errors import ConfigError

POSITIONS = ["last_prompt_token", "mean_response", "mean_prompt", "last_k:3", "token:<|im_start|>", "all_tokens"]


@pytest.mark.parametrize("deepest", ["full", "narrow"])
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gemma"])
def test_batched_store_equals_single_row_forward(chat_rows, model, layout, deepest, request, make_config):
    """Every row of a batched store equals its own unpadded forward, in both layouts, with the deepest layer
    whole or narrowed to the tokens read (``narrow``: no all_tokens, which reads every token; its attn_out and
    mlp_out are hooked, the narrowed modules' own outputs)."""
    handle = request.getfixturevalue(model)
    rows = chat_rows(13)
    positions = POSITIONS if deepest == "full" else POSITIONS[:-1]
    hooks = ["resid_post.*", "mlp_out.0", f"attn_out.{handle.n_layers - 1}", f"mlp_out.{handle.n_layers - 1}"]
    store = extract(handle, datasets.Dataset.from_list(rows), make_config(  # narrowed with oneDNN linears too
        model=handle.name, hooks=hooks, positions=positions, layout=layout, deepest_layer=deepest,
        cpu_linear="onednn" if deepest == "narrow" else "aten"))
    assert {s["batching"]["layout"] for s in store.manifest["shards"]} == {layout}
    assert {s["batching"]["deepest_layer"] for s in store.manifest["shards"]} == {deepest}
    assert len(store) == 13 and store.hooks == store.keys and len(store.keys) == 5 * len(positions)
    im_start = handle.tokenizer.convert_tokens_to_ids("<|im_start|>")
    lengths = [render_row(handle.tokenizer, r).n_tokens for r in rows]
    assert padding_fraction(lengths, bucket_batches(lengths, 4, 512)) > 0.05  # ragged batches, run unmasked
    for i in range(len(rows)):  # every row: a pad seen by a real position, or a sliding window (tiny Gemma: 8)
        r = render_row(handle.tokenizer, rows[i])  # counted from the wrong place, would show in some row
        ref = capture_hf(handle, torch.tensor([r.ids], device=handle.device), None, handle.hooks(hooks))
        p = r.n_prompt
        marker = max(t for t in range(p) if r.ids[t] == im_start)
        for hook, acts in ref.items():
            a = acts[0].cpu()
            want = {"last_prompt_token": a[p - 1], "mean_response": a[p:].mean(0), "mean_prompt": a[:p].mean(0),
                    "last_k:3": a[p - 3:p], "token:<|im_start|>": a[marker]}
            for pos, w in want.items():
                torch.testing.assert_close(store[f"{hook}@{pos}"][i], w, rtol=1e-5, atol=1e-5)
            if deepest == "full":
                off = store.token_offsets("resid_post.1@all_tokens")
                torch.testing.assert_close(store[f"{hook}@all_tokens"][int(off[i]):int(off[i + 1])], a,
                                           rtol=1e-5, atol=1e-5)


def mlp_tokens(handle, run) -> list[int]:
    """Tokens each layer's MLP computed while ``run()`` ran (its input's rows, pads included)."""
    counts = [0] * handle.n_layers

    def count(k: int):
        def hook(mod, args):
            counts[k] += args[0].shape[:-1].numel()
        return hook

    hooks = [layer.mlp.register_forward_pre_hook(count(k)) for k, layer in enumerate(handle.layers)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return counts


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_narrowed_deepest_layer_runs_its_mlp_at_the_read_tokens_only(chat_rows, tiny_gemma, layout, make_config):
    """The deepest layer's MLP sees exactly the tokens some position reads (here the last prompt token and the
    response), every shallower layer's MLP every real token; ``full`` gives the deepest every token too."""
    rows = chat_rows(9)
    rendered = [render_row(tiny_gemma.tokenizer, r) for r in rows]
    real, read = sum(r.n_tokens for r in rendered), sum(1 + r.n_response for r in rendered)
    assert read < real / 2
    configs = {d: make_config(model=tiny_gemma.name, positions=["last_prompt_token", "mean_response"], layout=layout,
                              deepest_layer=d, out_dir=make_config().out_dir + d) for d in ("narrow", "full")}
    seen = {d: mlp_tokens(tiny_gemma, functools.partial(extract, tiny_gemma, rows, c)) for d, c in configs.items()}
    padded = layout == "padded"
    assert seen["narrow"][-1] == read
    assert seen["full"][-1] == seen["narrow"][0] == seen["full"][0] and (padded or seen["full"][0] == real)


def test_narrow_and_onednn_are_refused_where_they_cannot_apply(chat_rows, tiny_llama, make_config):
    with pytest.raises(ConfigError, match="deepest_layer: narrow cannot apply .all_tokens reads every token"):
        extract(tiny_llama, chat_rows(4), make_config(positions=["all_tokens"], deepest_layer="narrow"))
    with pytest.raises(ConfigError, match="deepest_layer: narrow cannot apply .compile"):
        extract(tiny_llama, chat_rows(4), make_config(compile="compile", deepest_layer="narrow"))
    with pytest.raises(ConfigError, match="cpu_linear: onednn cannot apply .compile: compile picks its own"):
        extract(tiny_llama, chat_rows(4), make_config(compile="compile", cpu_linear="onednn"))


def test_cpu_linear_auto_takes_onednn_only_where_it_can_run_and_is_the_faster():
    from undertow.activations.engine.plan import onednn_for

    def pick(choice: str, faster: bool, dtype: str = "float32", device: str = "cpu") -> bool:
        return onednn_for(ExtractConfig(model="m", hooks=["resid_post.0"], cpu_linear=choice), "hf", device, dtype,
                          True, faster)

    assert pick("auto", faster=True) and not pick("auto", faster=False)
    assert pick("onednn", faster=False) and not pick("aten", faster=True)
    assert not pick("auto", faster=True, dtype="bfloat16") and not pick("auto", faster=True, device="cuda")
    with pytest.raises(ConfigError, match="cpu_linear: onednn cannot apply .the model runs in bfloat16"):
        pick("onednn", faster=True, dtype="bfloat16")


def test_row_order_is_dataset_order_whatever_the_batching(chat_rows, tiny_llama, make_config, tmp_path):
    ds = datasets.Dataset.from_list(chat_rows(21))
    one = extract(tiny_llama, ds, make_config(batch_size=1, out_dir=str(tmp_path / "one")))
    many = extract(tiny_llama, ds, make_config(batch_size=7, token_budget=400, shard_size=21, out_dir=str(tmp_path / "many")))
    for key in one.keys:
        torch.testing.assert_close(one[key][:], many[key][:], rtol=1e-5, atol=1e-5)
    assert one.rows["id"] == [f"row-{i}" for i in range(21)] == many.rows["id"]


def test_store_is_a_probe_source(chat_rows, tiny_llama, make_config):
    store = extract(tiny_llama, chat_rows(10), make_config(positions=["last_prompt_token"], dtype="bfloat16"))
    assert store.hooks == ["resid_post.0", "resid_post.1"]
    x = torch.as_tensor(store["resid_post.1"])
    assert x.shape == (10, tiny_llama.d_model) and x.dtype == torch.bfloat16
    assert {"label", "template_id", "theme", "split", "id"} <= set(store.rows)
    assert store.rows["label"] == [i % 2 for i in range(10)]
    probes_store = pytest.importorskip("undertow.probes.store")
    data = probes_store.resolve_data(store)
    assert data.n_rows == 10 and data.load("resid_post.1").shape == (10, tiny_llama.d_model)


def test_stats_match_stored_values(chat_rows, tiny_llama, make_config):
    store = extract(tiny_llama, chat_rows(19), make_config(positions=["last_prompt_token", "last_k:2"]))
    for key in ("resid_post.1@last_prompt_token", "resid_post.0@last_k:2"):
        x = store[key][:].reshape(-1, tiny_llama.d_model).double()
        s = store.stats(key)
        assert int(s["count"]) == len(x)
        torch.testing.assert_close(s["mean"].double(), x.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s["var"].double(), x.var(0, unbiased=False), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layout", ["padded", "packed"])  # packed: a NaN row's pads once leaked it to its batch
def test_nan_is_stored_counted_and_reported(chat_rows, tiny_llama, make_config, layout):
    rows = chat_rows(12)
    rows[7]["messages"][0]["content"] += " Xylophone"
    mark = tiny_llama.tokenizer(" Xylophone", add_special_tokens=False)["input_ids"][0]
    embed = tiny_llama.hf_model.get_input_embeddings()
    hook = embed.register_forward_hook(lambda m, args, out: out.masked_fill((args[0] == mark)[..., None], float("nan")))
    try:
        with pytest.warns(NonFiniteWarning, match="non-finite activations stored"):
            store = extract(tiny_llama, rows, make_config(layout=layout))
    finally:
        hook.remove()
    key = "resid_post.1@last_prompt_token"
    assert store.nonfinite[key]["rows"] == [7] and store.nonfinite[key]["values"] == tiny_llama.d_model
    assert torch.isnan(store[key][7]).all() and torch.isfinite(store[key][[0, 6, 8]]).all()
    assert int(store.stats(key)["count"]) == 11 and torch.isfinite(store.stats(key)["mean"]).all()


def test_max_rows_is_a_seeded_subset_in_dataset_order(chat_rows, tiny_llama, make_config, tmp_path):
    ds = chat_rows(30)
    a = extract(tiny_llama, ds, make_config(max_rows=9, seed=1, out_dir=str(tmp_path / "a")))
    b = extract(tiny_llama, ds, make_config(max_rows=9, seed=2, out_dir=str(tmp_path / "b")))
    assert a.rows["index"] == sorted(a.rows["index"]) and len(a) == 9
    assert a.rows["index"] != b.rows["index"] and a.dataset_hash != b.dataset_hash


@pytest.mark.parametrize("fields,rows,error,match", [
    ({"hooks": ["resid_post.7"]}, 4, HookError, "layer out of range; this model has 2 layers"),
    ({"hooks": ["resid_mid.1"]}, 4, HookError, "valid hooks are 'embed' or '<site>.<layer>'"),
    ({"positions": ["last_k:50"]}, 4, PositionError, r"needs 50 prompt tokens but dataset row 0 \(id 'row-0'\) has"),
    ({"backend": "nnsight"}, 4, ConfigError, "load it with load_model"),
    ({}, 0, DatasetError, "the dataset has no rows"),
])
def test_bad_inputs(chat_rows, tiny_llama, make_config, fields, rows, error, match):
    with pytest.raises(error, match=match):
        extract(tiny_llama, chat_rows(rows), make_config(**fields))


def test_mean_response_without_response(chat_rows, tiny_llama, make_config):
    with pytest.raises(PositionError, match="needs a response but dataset row 0"):
        extract(tiny_llama, chat_rows(3, with_response=False), make_config())


def test_unwritable_out_dir(chat_rows, tiny_llama, make_config, tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(StoreWriteError, match="choose a writable out_dir"):
        extract(tiny_llama, chat_rows(3), make_config(out_dir=str(tmp_path / "a_file" / "store")))


def test_existing_store_needs_resume_or_overwrite(chat_rows, tiny_llama, make_config):
    from undertow.activations import StoreError

    cfg = make_config()
    extract(tiny_llama, chat_rows(5), cfg)
    with pytest.raises(StoreError, match="already holds a complete store: pass --resume .* --overwrite"):
        extract(tiny_llama, chat_rows(5), cfg)
    assert len(extract(tiny_llama, chat_rows(6), cfg, overwrite=True)) == 6
    with pytest.raises(StoreError, match="cannot resume into .*dataset_hash="):
        extract(tiny_llama, chat_rows(7), cfg, resume=True)
    with pytest.raises(StoreError, match="cannot resume into .*hooks="):
        extract(tiny_llama, chat_rows(6), make_config(hooks=["resid_post.0"]), resume=True)
    assert len(ActivationStore(cfg.out_dir)) == 6


def test_layout_auto_packs_on_the_cpu_and_pads_under_compile(tiny_llama, make_config):
    from undertow.activations.engine.plan import resolve_layout

    assert resolve_layout(make_config(), tiny_llama) == "packed"  # eager hf body on the CPU
    assert resolve_layout(make_config(compile="compile"), tiny_llama) == "padded"  # fixed bucket shapes
    assert resolve_layout(make_config(layout="padded"), tiny_llama) == "padded"


def test_packed_layout_where_it_cannot_run_is_one_line_before_the_store(chat_rows, tiny_llama, make_config, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=r"^layout: packed cannot apply \(compile: compile pads"):
        extract(tiny_llama, chat_rows(4), make_config(layout="packed", compile="compile", out_dir=str(out)))
    assert not out.exists()


def test_a_decoder_that_bypasses_the_attention_interface_cannot_pack(chat_rows, tiny_llama, make_config,
                                                                      monkeypatch):
    """Without the packed attention the rows of a packed forward would see each other: refused, naming the fix."""
    import contextlib

    from undertow.activations.engine import extraction
    from undertow.activations.models.packed import PackingError

    monkeypatch.setattr(extraction, "packed_forward", lambda config: contextlib.nullcontext())
    with pytest.raises(PackingError, match="ignored transformers' attention interface.*set layout: padded"):
        extract(tiny_llama, chat_rows(4), make_config(layout="packed"))
