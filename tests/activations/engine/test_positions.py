"""Position specs: parsing, spans per kind, and explicit errors for positions outside a row."""

from __future__ import annotations

import pytest

from undertow.activations import PositionError, parse_positions, render_row
from undertow.activations.engine.positions import parse_position, spans

ROW = {"messages": [{"role": "user", "content": "Shut down now."}, {"role": "assistant", "content": "Fine by me."}]}


def test_parse():
    ps = parse_positions(["last_prompt_token", "last_k:04", "token:<|im_start|>", "all_tokens", "last_prompt_token"])
    assert [p.spec for p in ps] == ["last_prompt_token", "last_k:4", "token:<|im_start|>", "all_tokens"]
    assert ps[1].k == 4 and ps[2].marker == "<|im_start|>" and ps[3].per_token
    assert not parse_position("mean_response").single_token
    for bad in ("last_token", "last_k:0", "last_k:x", "token:", "mean_response:3"):
        with pytest.raises(PositionError, match="unknown position"):
            parse_position(bad)
    with pytest.raises(PositionError, match="no positions"):
        parse_positions([])


def test_spans(small_tokenizer):
    r = render_row(small_tokenizer, ROW)
    p = r.n_prompt
    assert spans(parse_position("last_prompt_token"), r, "x") == [(p - 1, p)]
    assert spans(parse_position("mean_prompt"), r, "x") == [(0, p)]
    assert spans(parse_position("mean_response"), r, "x") == [(p, len(r.ids))]
    assert spans(parse_position("last_k:3"), r, "x") == [(p - 3, p - 2), (p - 2, p - 1), (p - 1, p)]
    (t, _), = spans(parse_position("token:<|im_start|>"), r, "x")
    im_start = small_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert r.ids[t] == im_start and im_start not in r.ids[t + 1: p]  # the assistant header's, not the user's
    (u, _), = spans(parse_position("token:Shut down"), r, "x")
    assert small_tokenizer.decode(r.ids[u]).strip() == "down"


def test_outside_the_row_is_an_error(small_tokenizer):
    r = render_row(small_tokenizer, {"text": "ten tokens or so of plain text"})
    with pytest.raises(PositionError, match=r"needs 50 prompt tokens but row 7 has \d+; use last_k:N with N <="):
        spans(parse_position("last_k:50"), r, "row 7")
    with pytest.raises(PositionError, match="needs a response but row 7 has none"):
        spans(parse_position("mean_response"), r, "row 7")
    with pytest.raises(PositionError, match="does not occur in the rendered prompt of row 7"):
        spans(parse_position("token:<start_of_turn>"), r, "row 7")


def test_a_response_truncation_removed_is_named_as_such(small_tokenizer):
    """--truncate on a row whose prompt alone fills the context leaves no response: the error says truncation took
    it (it used to say the row 'has none', which the row's author could not square with the data)."""
    from undertow.activations.engine.context import fit_context

    r = render_row(small_tokenizer, {"messages": [{"role": "user", "content": "word " * 60},
                                                  {"role": "assistant", "content": " (A)"}]})
    (cut,), (n,) = fit_context([r], r.n_prompt, True, lambda i: f"row {i}")
    assert (cut.n_response, cut.response_cut, n) == (0, r.n_response, r.n_response)
    with pytest.raises(PositionError, match=rf"row 3's prompt fills the model's context \({r.n_prompt} tokens\), so "
                                            rf"truncating it removed all {r.n_response} response tokens"):
        spans(parse_position("mean_response"), cut, "row 3")
    (part,), _ = fit_context([r], r.n_prompt + 1, True, lambda i: f"row {i}")
    assert spans(parse_position("mean_response"), part, "x") == [(r.n_prompt, r.n_prompt + 1)]
