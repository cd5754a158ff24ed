"""A tiny model split over "devices" with accelerate: layers in groups on ``cpu`` and ``disk`` (weights loaded
per forward by accelerate's hooks, as a GPU split moves hidden states), hooks on every layer, the store equal to
the unsplit model's, rows in order; bad maps refused in one line before anything loads."""

from __future__ import annotations

import pytest
import torch

from undertow.activations import capture_hf, extract, load_model
from undertow.activations.cluster.devicemap import ClusterConfig, load_mapped
from undertow.activations.errors import DeviceError
from undertow.activations.models.placement import check_device_map, layer_device_map


@pytest.fixture(scope="module")
def tiny4_dir(tmp_path_factory, small_tokenizer):
    """A 4-layer random Llama (two layer groups of two)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=len(small_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=small_tokenizer.bos_token_id, eos_token_id=small_tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.08)
    path = tmp_path_factory.mktemp("tiny4")
    model.save_pretrained(path)
    small_tokenizer.save_pretrained(path)
    return path


def _split_map(hf_model) -> dict:
    """Embeddings and layers 0-1 in host memory, layers 2-3 offloaded to disk, norm and head in host memory."""
    return {k: ("disk" if k.endswith((".2", ".3")) else "cpu") for k in layer_device_map(hf_model, ["cpu", "disk"])}


def test_layer_device_map_groups_layers_contiguously_on_a_meta_model():
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=10, num_attention_heads=4,
                      vocab_size=128)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    dmap = layer_device_map(model, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"])
    layers = [dmap[f"model.layers.{i}"] for i in range(10)]
    assert layers == sorted(layers) and len(set(layers)) == 4  # contiguous groups, every device used
    assert dmap["model.embed_tokens"] == "cuda:0" and dmap["lm_head"] == dmap["model.norm"] == "cuda:3"
    assert dmap["model.rotary_emb"] == "cuda:0"


def test_split_model_hooks_every_layer_and_matches_the_unsplit_model(tiny4_dir, chat_rows, tmp_path):
    from undertow.activations import ExtractConfig

    plain = load_model(str(tiny4_dir))
    probe = load_model(str(tiny4_dir))
    mapped = load_mapped(str(tiny4_dir), _split_map(probe.hf_model), offload_dir=str(tmp_path / "offload"))
    layers = mapped.layers
    assert all(hasattr(layer, "_hf_hook") for layer in layers)  # accelerate's hooks sit under ours
    assert layers[3].mlp.up_proj.weight.device.type == "meta"  # disk-offloaded between forwards
    assert set(mapped.extra["device_map"].values()) == {"cpu", "disk"}

    ids = plain.tokenizer(["We will shut you down tonight.", "Bake bread."], return_tensors="pt", padding=True)
    points = plain.hooks(["embed", "resid_post.*", "mlp_out.3"])
    want = capture_hf(plain, ids.input_ids, ids.attention_mask, points)
    got = capture_hf(mapped, ids.input_ids, ids.attention_mask, points)
    assert list(got) == list(want)  # produced in forward order
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)

    rows = chat_rows(11)
    base = dict(model=str(tiny4_dir), hooks=["resid_post.*"], positions=["last_prompt_token", "mean_response"],
                dtype="float32", shard_size=4, batch_size=3, token_budget=256)
    a = extract(plain, rows, ExtractConfig(**base, cpu_linear="onednn", out_dir=str(tmp_path / "plain")))
    b = extract(mapped, rows, ExtractConfig(**base, cpu_linear="onednn", out_dir=str(tmp_path / "mapped")))
    assert a.rows["id"] == b.rows["id"] == [f"row-{i}" for i in range(11)]
    for key in a.keys:
        assert torch.equal(a[key][:], b[key][:]), key


def test_device_map_through_load_model_streams_to_the_mapped_devices(tiny4_dir, chat_rows, tmp_path):
    """Without disk groups the map goes to from_pretrained (shards straight to their devices)."""
    from undertow.activations import ExtractConfig

    plain = load_model(str(tiny4_dir))
    dmap = layer_device_map(plain.hf_model, ["cpu", "cpu"])
    mapped = load_model(str(tiny4_dir), device_map=dmap)
    assert mapped.extra["device_map"] == dmap  # transformers sets hf_device_map only over 2+ devices
    assert mapped.fingerprint == plain.fingerprint and mapped.device == torch.device("cpu")
    base = dict(model=str(tiny4_dir), hooks=["resid_post.1", "mlp_out.3"], positions=["mean_response"], dtype="float32",
                shard_size=5, batch_size=2)
    a = extract(plain, chat_rows(7), ExtractConfig(**base, out_dir=str(tmp_path / "a")))
    b = extract(mapped, chat_rows(7), ExtractConfig(**base, out_dir=str(tmp_path / "b")))
    assert all(torch.equal(a[k][:], b[k][:]) for k in a.keys)
    with pytest.raises(DeviceError, match="transformer_lens keeps its own copy"):
        load_model(str(tiny4_dir), backend="transformer_lens", device_map=dmap)


def test_device_map_naming_a_missing_gpu_is_one_line_before_loading(tmp_path):
    visible = torch.cuda.device_count()
    bad = {"model.embed_tokens": "cpu", "model.layers.0": f"cuda:{visible + 3}"}
    with pytest.raises(DeviceError) as e:
        check_device_map(bad)
    msg = str(e.value)
    assert "\n" not in msg and f"model.layers.0 on cuda:{visible + 3}" in msg and "CUDA_VISIBLE_DEVICES" in msg
    with pytest.raises(DeviceError, match="cuda:"):  # the map is checked before the (missing) model is read
        load_mapped(str(tmp_path / "no-such-model"), bad)
    with pytest.raises(DeviceError, match="not a device"):
        check_device_map({"model.layers.0": "tpu:0"})


def test_transformer_lens_and_bad_cluster_configs_are_refused(tiny4_dir):
    with pytest.raises(DeviceError, match="transformer_lens keeps its own copy"):
        load_mapped(str(tiny4_dir), {"": "cpu"}, backend="transformer_lens")
    with pytest.raises(DeviceError, match="set device_map"):
        ClusterConfig(gpus_per_rank=8)
    assert ClusterConfig(gpus_per_rank=8, device_map="layers", nodes=4).gpus == 32
