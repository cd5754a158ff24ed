"""External inputs: rows keep every column, one set of row rules, context length, model directories, batching record."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from undertow.activations import (
    ActivationStore,
    DatasetError,
    DeviceError,
    ModelLoadError,
    ModelNotFoundError,
    extract,
    load_model,
)
from undertow.activations.engine.rows import load_rows


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_later_rows_keep_their_columns_through_extraction(tmp_path, tiny_llama, make_config):
    rows = [{"id": "a", "label": 0, "prompt": "We shut you down tonight."},
            {"id": "b", "label": 1, "prompt": "Bake bread.", "template_id": "t7", "split": "test", "response": "Ok."},
            {"id": "c", "label": 1, "messages": [{"role": "user", "content": "Bye."}], "theme": "shutdown"}]
    ds = load_rows(_jsonl(tmp_path / "rows.jsonl", rows))
    assert ds[1]["template_id"] == "t7" and ds[1]["split"] == "test" and ds[1]["response"] == "Ok."
    assert ds[2]["theme"] == "shutdown" and ds[0]["template_id"] is None
    store = extract(tiny_llama, ds, make_config(positions=["last_prompt_token"]))
    assert store.rows["template_id"] == [None, "t7", None] and store.rows["split"] == [None, "test", None]
    assert store.rows["theme"] == [None, None, "shutdown"]


@pytest.mark.parametrize("bad,match", [
    ({"id": "x", "label": 1}, r"rows.jsonl:2: the row has no text \(no 'messages', 'prompt' or 'text' value\)"),
    ({"id": "x", "label": 2, "prompt": "p"}, r"rows.jsonl:2: 'label' must be 0 or 1 \(-1 or absent: unlabelled\), got 2"),
    ({"id": "x", "label": "1", "prompt": "p"}, r"rows.jsonl:2: 'label' must be 0 or 1 .* got '1'"),
    ({"id": "a", "label": 1, "prompt": "p"}, r"rows.jsonl:2: duplicate id 'a' \(first at .*rows.jsonl:1\)"),
    ({"id": "x", "prompt": 5}, r"rows.jsonl:2: 'prompt' must be a non-empty string, got 5"),
    ({"id": "x", "messages": [{"role": "assistant", "content": "hi"}]}, r"rows.jsonl:2: 'messages' has no user turn"),
    ({"id": "x", "prompt": "p", "template_id": 3}, r"rows.jsonl:2: 'template_id' is a number here but a str at"),
])
def test_row_rules_name_the_line(tmp_path, bad, match):
    first = {"id": "a", "label": 0, "prompt": "hello", "template_id": "t0"}
    with pytest.raises(DatasetError, match=match):
        load_rows(_jsonl(tmp_path / "rows.jsonl", [first, bad]))


def test_the_engine_applies_the_same_rules_before_writing(tmp_path, tiny_llama, make_config, chat_rows):
    rows = chat_rows(4)
    rows[2] = dict(rows[2], label=2)
    with pytest.raises(DatasetError, match=r"dataset row 2 \(id 'row-2'\): 'label' must be 0 or 1"):
        extract(tiny_llama, rows, make_config())
    rows[2] = dict(rows[2], label=1, id="row-0")
    with pytest.raises(DatasetError, match=r"dataset row 2 \(id 'row-0'\): duplicate id 'row-0'"):
        extract(tiny_llama, rows, make_config())
    assert not (tmp_path / "store").exists()  # refused before a store directory existed


def test_unreadable_data_files(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"rows.jsonl:2: not UTF-8 \(byte 0xe9 at offset 32\); save the file as UTF-8"):
        load_rows(p)
    j = tmp_path / "rows.json"
    j.write_text('[{"prompt": "a"},\n {"prompt": }]')
    with pytest.raises(DatasetError, match=r"rows.json:2:13: invalid JSON \(Expecting value\)"):
        load_rows(j)
    j.write_text('{"prompt": "a"}')
    with pytest.raises(DatasetError, match="must be a list of row objects, got dict"):
        load_rows(j)


def test_context_length_refused_or_truncated_and_recorded(tiny_llama, make_config, chat_rows):
    rows = chat_rows(4)
    rows[3] = dict(rows[3], messages=[{"role": "user", "content": "x " * 100_000}, {"role": "assistant", "content": "Ok"}])
    with pytest.raises(DatasetError, match=r"dataset row 3 \(id 'row-3'\) has [\d,]+ tokens but the model's context is "
                                           r"256: shorten the row, or set truncate: true \(--truncate\)"):
        extract(tiny_llama, rows, make_config(positions=["last_prompt_token"]))
    store = extract(tiny_llama, rows, make_config(positions=["last_prompt_token"], truncate=True), overwrite=True)
    assert store.rows["n_tokens"][3] == 256 and store.rows["truncated_tokens"][:3] == [0, 0, 0]
    assert store.rows["truncated_tokens"][3] > 90_000
    assert store.manifest["shards"][0]["truncated"] == {"rows": [3], "tokens": store.rows["truncated_tokens"][3]}
    assert store.manifest["identity"]["truncate_to"] == 256


def test_resume_records_the_batching_of_each_shard(tiny_llama, make_config, chat_rows):
    cfg = make_config(shard_size=4, batch_size=4)
    store = extract(tiny_llama, chat_rows(8), cfg)
    assert "batch_size" not in store.manifest["config"] and "token_budget" not in store.manifest["config"]
    (store.path / "rows" / "00001.jsonl").unlink()  # shard 1 lost a file: resume re-extracts it, keeps shard 0
    resumed = extract(tiny_llama, chat_rows(8), cfg.replace(batch_size=1, token_budget=300, layout="padded",
                                                            deepest_layer="full", cpu_linear="onednn"), resume=True)
    assert [s["batching"] for s in resumed.manifest["shards"]] == [  # as it ran (auto on a CPU, float32 model:
        {"batch_size": 4, "token_budget": 512, "share_prompts": True, "compile": "none", "layout": "packed",
         "deepest_layer": "narrow", "cpu_linear": "aten"},  # packed, narrow, aten)
        {"batch_size": 1, "token_budget": 300, "share_prompts": True, "compile": "none", "layout": "padded",
         "deepest_layer": "full", "cpu_linear": "onednn"}]
    resumed.verify()


def test_pickle_only_model_dir_is_refused(tmp_path, tiny_llama_dir):
    d = tmp_path / "model"
    d.mkdir()
    for f in tiny_llama_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, d / f.name)
    from safetensors.torch import load_file

    torch.save(load_file(str(tiny_llama_dir / "model.safetensors")), d / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"only pickle weights \(pytorch_model.bin\), which can run code.*"
                                             r"UNDERTOW_ALLOW_PICKLE=1") as e:
        load_model(str(d))
    assert "weights_only" not in str(e.value)
    assert load_model(str(d), allow_pickle=True).n_layers == 2  # the opt-in


def test_crafted_model_files(tmp_path, tiny_llama_dir):
    d = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, d)
    (d / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelLoadError, match=r"model.safetensors: safetensors header claims 1,000,000,000,000 bytes"):
        load_model(str(d))
    (d / "config.json").write_text("{nope")
    with pytest.raises(ModelLoadError, match=r"config.json:1:2: invalid JSON"):
        load_model(str(d))
    g = tmp_path / "weights.gguf"
    g.mkdir()
    with pytest.raises(ModelNotFoundError, match="is a directory, not a .gguf file"):
        load_model(str(g))
    with pytest.raises(DeviceError, match="'banana' is not a device"):
        load_model(str(tiny_llama_dir), device="banana")


def test_open_refuses_non_store_paths(tmp_path):
    (tmp_path / "manifest.json").write_text('{"n_rows": 3}')
    with pytest.raises(Exception, match="is not an undertow activation store's") as e:
        ActivationStore(tmp_path)
    assert e.type.__name__ == "StoreError"


def test_hook_hints_never_invent_a_layer_range(tiny_llama):
    from undertow.activations import ExtractConfig, HookError

    with pytest.raises(HookError, match="and a layer number of the model") as e:
        ExtractConfig(hooks=["resid_mid.3"])
    assert "0-3" not in str(e.value)
    with pytest.raises(HookError, match="layer 0-1 "):  # once the model is known: its real range
        tiny_llama.hooks(["resid_mid.3"])
