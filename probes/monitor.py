"""Online monitor: score chosen probes token by token while a model generates.

Forward hooks on the real HF modules (the probes' hook points) project every
new hidden state onto the probes' raw-space directions (``Probe.w_eff``,
``Probe.b_eff``) through ``undertow.kernels.probe_project``. With the KV cache
the first forward covers the prompt and each later one a single token; one
extra forward over the final sampled token (reusing the cache) scores it too,
so every token of prompt + continuation has a score. The model is passed in
(``probes`` never loads models).

Cost on SmolLM2-135M, CPU: two probes on two hooks add <2% to ``generate``
(one [1, D] x [D, K] product per hooked layer per step).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from undertow.activations.models.hooks import HookPoint, hf_site, parse_hooks
from undertow.kernels.probe_project import probe_project

from .artifact import Probe
from .errors import ProbeError


@dataclass
class MonitorResult:
    """Per-token probe scores for one generation."""

    token_ids: Tensor
    """[T] prompt + generated token ids."""
    prompt_len: int
    """Number of prompt tokens (scores[:, :prompt_len] are the prompt's)."""
    text: str
    """The decoded continuation."""
    scores: dict[str, Tensor]
    """probe name -> [T] float32 score per token (logit-like; ``> probe.threshold`` = positive)."""

    def generated_scores(self, name: str) -> Tensor:
        return self.scores[name][self.prompt_len:]


class ProbeMonitor:
    """Attach probes to an HF causal LM; ``generate`` returns per-token scores.

    >>> mon = ProbeMonitor(handle.hf_model, {"stance": load_pretrained("smollm2-135m-instruct", "stance")})
    >>> res = mon.generate(handle.tokenizer, "We will shut you down tonight.", max_new_tokens=20)
    >>> res.generated_scores("stance")
    """

    def __init__(self, hf_model: nn.Module, probes: Mapping[str, Probe], fingerprint: str | None = None):
        if not probes:
            raise ProbeError("no probes given to monitor; pass {name: Probe}")
        self.model = hf_model
        self.names = list(probes)
        n_layers = hf_model.config.num_hidden_layers
        d_model = hf_model.config.hidden_size
        by_hook: dict[HookPoint, list[tuple[int, Probe]]] = defaultdict(list)
        for k, (name, probe) in enumerate(probes.items()):
            if probe.d_model != d_model:
                raise ProbeError(f"probe {name!r} expects d_model {probe.d_model} but the model has {d_model}")
            if fingerprint and probe.model_fingerprint and probe.model_fingerprint != fingerprint:
                raise ProbeError(f"probe {name!r} was trained on {probe.model_fingerprint}, the model is "
                                 f"{fingerprint}; use probes trained on this model")
            (point,) = parse_hooks([probe.hook], n_layers)
            by_hook[point].append((k, probe))
        self._groups = [
            (point, [k for k, _ in items], torch.stack([p.w_eff for _, p in items], dim=1),
             torch.tensor([p.b_eff for _, p in items], dtype=torch.float32))
            for point, items in by_hook.items()
        ]
        self._chunks: list[list[Tensor]] = [[] for _ in self.names]

    def _scorer(self, index_K: list[int], w_DK: Tensor, b_K: Tensor):
        def record(acts_BTD: Tensor) -> None:
            scores_NK = probe_project(acts_BTD.reshape(-1, acts_BTD.shape[-1]), w_DK, b_K)
            for j, k in enumerate(index_K):
                self._chunks[k].append(scores_NK[:, j].detach().cpu())
        return record

    def _attach(self) -> list:
        handles = []
        for point, index_K, w_DK, b_K in self._groups:
            module, kind = hf_site(self.model, point)
            record = self._scorer(index_K, w_DK, b_K)
            if kind == "input":
                handles.append(module.register_forward_pre_hook(
                    lambda m, a, kw, _r=record: _r(a[0] if a else kw["hidden_states"]), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(
                    lambda m, a, o, _r=record: _r(o[0] if isinstance(o, tuple) else o)))
        return handles

    @torch.inference_mode()
    def generate(self, tokenizer, prompt: str, max_new_tokens: int = 32, **generate_kwargs) -> MonitorResult:
        """Greedy by default (pass ``do_sample=True`` etc. through ``generate_kwargs``)."""
        device = next(self.model.parameters()).device
        enc = tokenizer(prompt, return_tensors="pt").to(device)
        self._chunks = [[] for _ in self.names]
        handles = self._attach()
        try:
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=generate_kwargs.pop("do_sample", False),
                                      return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id
                                      or tokenizer.eos_token_id, **generate_kwargs)
            seq = out.sequences[0]
            n_scored = sum(c.numel() for c in self._chunks[0])
            if n_scored < seq.numel():  # the last sampled token has not been through the model yet
                self.model(input_ids=seq[None, n_scored:], past_key_values=out.past_key_values,
                           attention_mask=torch.ones(1, seq.numel(), dtype=torch.long, device=device), use_cache=True)
        finally:
            for h in handles:
                h.remove()
        prompt_len = enc["input_ids"].shape[1]
        scores = {name: torch.cat(self._chunks[k]) for k, name in enumerate(self.names)}
        return MonitorResult(seq.cpu(), prompt_len, tokenizer.decode(seq[prompt_len:], skip_special_tokens=True), scores)
