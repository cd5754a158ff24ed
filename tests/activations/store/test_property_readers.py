"""Every reader of an external file, fed random bytes and random JSON shapes: an ``UndertowError`` or success, never
another exception type (a traceback at the CLI).

Readers and examples per run (``max_examples``; hypothesis also replays its database of past failures):
JSONL rows 200, .json rows 100, manifest (random + mutated real) 150 + 150, resume into a mutated manifest 100,
probe JSON 150, safetensors header 200 (+ the safetensors library must then load what the check passed),
model directory 100, config YAML 200. On this 2-core machine the module runs in ~60 s.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import struct

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from undertow.activations import ActivationStore, ExtractConfig
from undertow.activations.engine.rows import load_rows
from undertow.activations.models.model_dir import check_model_dir
from undertow.activations.store.writer import prepare_store
from undertow.core.errors import UndertowError
from undertow.core.validate import safetensors_header

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=False)

scalars = st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)
ROW_KEYS = ["prompt", "messages", "text", "response", "label", "id", "template_id", "split", "theme"]
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "x"]) | scalars,
                                           "content": st.text(max_size=20) | scalars}), max_size=3)
row_values = st.one_of(json_values, messages, st.sampled_from([0, 1, -1, 2, "1", True, 0.5]), st.text(min_size=1, max_size=20))
rows = st.dictionaries(st.sampled_from(ROW_KEYS) | st.text(max_size=6), row_values, max_size=6)


def _outcome(fn, *args, one_line: bool = True):
    """Run ``fn``; an ``UndertowError`` (with a one-line message) is an answer, anything else fails the test."""
    try:
        return fn(*args)
    except UndertowError as e:
        assert str(e) and (not one_line or "\n" not in str(e).strip()), f"not one line: {e!r}"
        return e


@settings(max_examples=200, **SETTINGS)
@given(lines=st.lists(rows | json_values, min_size=0, max_size=6), garbage=st.binary(max_size=40), raw=st.booleans())
def test_jsonl_rows(tmp_path_factory, lines, garbage, raw):
    path = tmp_path_factory.mktemp("j") / "rows.jsonl"
    path.write_bytes(garbage if raw else "".join(json.dumps(x) + "\n" for x in lines).encode())
    out = _outcome(load_rows, path)
    if not isinstance(out, UndertowError):  # kept rows keep every key any row had (Dataset.from_list kept the first's)
        assert set(out.column_names) == {k for x in lines for k in x}


@settings(max_examples=100, **SETTINGS)
@given(data=st.lists(rows, max_size=5) | json_values, garbage=st.binary(max_size=40), raw=st.booleans())
def test_json_rows(tmp_path_factory, data, garbage, raw):
    path = tmp_path_factory.mktemp("j") / "rows.json"
    path.write_bytes(garbage if raw else json.dumps(data).encode())
    _outcome(load_rows, path)


@pytest.fixture(scope="module")
def real_store(tmp_path_factory, tiny_llama, tiny_llama_dir, chat_rows):
    from undertow.activations import extract

    cfg = ExtractConfig(model=str(tiny_llama_dir), hooks=["resid_post.1"], dtype="float32", shard_size=3,
                        out_dir=str(tmp_path_factory.mktemp("p") / "store"))
    return extract(tiny_llama, chat_rows(7), cfg).path


def _paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*prefix, i))


def _mutate(manifest, data):
    m = copy.deepcopy(manifest)
    where = data.draw(st.sampled_from(list(_paths(m))[1:]))
    parent = m
    for k in where[:-1]:
        parent = parent[k]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(json_values | st.sampled_from(["../x", "/etc/passwd", -1, 10**9]))
    return m


def _copy_store(src, tmp_path_factory):
    dst = tmp_path_factory.mktemp("m") / "store"
    shutil.copytree(src, dst)
    return dst


@settings(max_examples=150, **SETTINGS)
@given(manifest=json_values, garbage=st.binary(max_size=60), raw=st.booleans())
def test_random_manifest(tmp_path_factory, real_store, manifest, garbage, raw):
    store = _copy_store(real_store, tmp_path_factory)
    (store / "manifest.json").write_bytes(garbage if raw else json.dumps(manifest).encode())
    _outcome(ActivationStore, store)


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_mutated_manifest(tmp_path_factory, real_store, data):
    store = _copy_store(real_store, tmp_path_factory)
    m = _mutate(json.loads((store / "manifest.json").read_text()), data)
    (store / "manifest.json").write_text(json.dumps(m))
    opened = _outcome(ActivationStore, store)
    if not isinstance(opened, UndertowError):
        for key in opened.keys:
            _outcome(lambda k: opened[k][:], key)
        _outcome(lambda: opened.rows)


@settings(max_examples=100, **SETTINGS)
@given(data=st.data(), resume=st.booleans(), overwrite=st.booleans())
def test_resume_or_overwrite_into_a_mutated_manifest(tmp_path_factory, real_store, data, resume, overwrite):
    store = _copy_store(real_store, tmp_path_factory)
    good = json.loads((store / "manifest.json").read_text())
    m = _mutate(good, data)
    (store / "manifest.json").write_text(json.dumps(m))
    header = {k: v for k, v in good.items() if k not in ("shards", "complete", "stats", "stats_file", "tokens",
                                                           "bytes", "nonfinite")}
    _outcome(prepare_store, store, header, resume, overwrite)
    outside = store.parent
    assert {p.name for p in outside.iterdir()} == {"store"}  # nothing outside the store was touched


def _probe_dir(tmp_path_factory, meta):
    from undertow.probes.artifact import _canonical

    d = tmp_path_factory.mktemp("probe")
    import torch
    from safetensors.torch import save_file

    save_file({n: torch.ones(4) for n in ("weight", "bias", "mean", "std")}, str(d / "probe.safetensors"))
    if isinstance(meta, dict):
        meta = dict(meta, format="undertow.probe")
        meta["weights_sha256"] = hashlib.sha256((d / "probe.safetensors").read_bytes()).hexdigest()
        meta.pop("metadata_sha256", None)
        try:
            meta["metadata_sha256"] = hashlib.sha256(_canonical(meta)).hexdigest()
        except (TypeError, ValueError):
            pass  # NaN and friends: no canonical form, the checksum stays absent
    return d, meta


PROBE_KEYS = ["hook", "probe_type", "d_model", "threshold", "position", "metrics", "config", "extra",
              "format_version", "model_fingerprint", "created", "training_data_hash", "undertow_version"]


@settings(max_examples=150, **SETTINGS)
@given(meta=st.dictionaries(st.sampled_from(PROBE_KEYS), json_values | st.integers(0, 5), max_size=10) | json_values,
       garbage=st.binary(max_size=60), raw=st.booleans())
@example(meta={"format_version": 0, "hook": float("inf")}, garbage=b"", raw=False)  # once a ValueError, not a ProbeError
def test_probe_json(tmp_path_factory, meta, garbage, raw):
    from undertow.probes.artifact import Probe

    d, meta = _probe_dir(tmp_path_factory, meta)
    (d / "probe.json").write_bytes(garbage if raw else json.dumps(meta).encode())
    _outcome(Probe.load, d)


tensor_specs = st.dictionaries(
    st.text(max_size=6), st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "BF16", "I64", "Q4"]) | scalars,
                                                "shape": st.lists(st.integers(-1, 6), max_size=3) | json_values,
                                                "data_offsets": st.lists(st.integers(-2, 80), max_size=3) | json_values}),
    max_size=3)


@settings(max_examples=200, **SETTINGS)
@given(header=tensor_specs | json_values, body=st.binary(max_size=80), claimed=st.none() | st.integers(0, 2**64 - 1),
       raw=st.binary(max_size=40), use_raw=st.booleans())
def test_safetensors_header(tmp_path_factory, header, body, claimed, raw, use_raw):
    from safetensors.torch import load_file

    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    blob = json.dumps(header).encode()
    path.write_bytes(raw if use_raw else struct.pack("<Q", len(blob) if claimed is None else claimed) + blob + body)
    out = _outcome(safetensors_header, path, UndertowError, "fix it")
    if not isinstance(out, UndertowError):
        load_file(str(path))  # what the check passes, safetensors itself reads


@settings(max_examples=100, **SETTINGS)
@given(config=json_values, config_raw=st.binary(max_size=30), raw=st.booleans(), weights=st.binary(max_size=40),
       weight_name=st.sampled_from(["model.safetensors", "pytorch_model.bin", "none"]))
def test_model_dir(tmp_path_factory, config, config_raw, raw, weights, weight_name):
    d = tmp_path_factory.mktemp("model")
    (d / "config.json").write_bytes(config_raw if raw else json.dumps(config).encode())
    if weight_name != "none":
        (d / weight_name).write_bytes(weights)
    _outcome(check_model_dir, d)


FIELDS = ["model", "backend", "hooks", "positions", "dtype", "model_dtype", "device", "template", "batch_size",
          "token_budget", "share_prompts", "shard_size", "out_dir", "seed", "dataset", "max_rows", "truncate", "other"]


@settings(max_examples=200, **SETTINGS)
@given(data=st.dictionaries(st.sampled_from(FIELDS), json_values | st.sampled_from(["resid_post.*", "last_k:2", 7, "abc"]),
                            max_size=6) | json_values, garbage=st.binary(max_size=60), raw=st.booleans())
def test_config_yaml(tmp_path_factory, data, garbage, raw):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(garbage if raw else yaml.safe_dump(data, allow_unicode=True).encode())
    # one_line=False: a YAML ReaderError (a NUL byte) comes out of typed_config.from_yaml as two lines (reported)
    _outcome(ExtractConfig.from_yaml, path, one_line=False)
