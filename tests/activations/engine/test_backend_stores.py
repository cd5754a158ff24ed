"""transformer_lens and nnsight backends write the same store as hf, within a per-dtype tolerance."""

from __future__ import annotations

import pytest

from undertow.activations import extract, load_model

# Relative to the largest |value| of each key. fp32: the backends' own parity is ~1e-5 (test_parity.py);
# bf16 stores round each value to 8 mantissa bits, so two backends may land one bf16 ulp (2^-8 relative) apart.
TOLERANCE = {"float32": 1e-4, "bfloat16": 2 ** -7}


@pytest.mark.parametrize("which,dtype", [("tiny_llama_dir", "float32"), ("tiny_gemma_dir", "bfloat16")])
def test_backends_write_the_same_store(which, dtype, request, make_config, chat_rows, tmp_path):
    model_dir = str(request.getfixturevalue(which))
    rows = chat_rows(9)
    fields = dict(model=model_dir, hooks=["resid_post.*", "mlp_out.1"], dtype=dtype,
                  positions=["last_prompt_token", "mean_response", "all_tokens"])
    stores = {}
    for backend in ("hf", "transformer_lens", "nnsight"):
        handle = load_model(model_dir, backend=backend)
        stores[backend] = extract(handle, rows, make_config(backend=backend, out_dir=str(tmp_path / backend), **fields))
    ref = stores["hf"]
    for backend in ("transformer_lens", "nnsight"):
        other = stores[backend]
        assert other.keys == ref.keys and other.rows == ref.rows
        assert other.model_fingerprint == ref.model_fingerprint
        for key in ref.keys:
            a, b = ref[key][:].float(), other[key][:].float()
            rel = ((a - b).abs().max() / a.abs().max()).item()
            assert rel <= TOLERANCE[dtype], (backend, key, rel)
