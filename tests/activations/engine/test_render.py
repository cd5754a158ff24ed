"""Prompt / response spans are exact on a chat-template tokenizer and on a plain (no template) one."""

from __future__ import annotations

import copy

import pytest

from undertow.activations import DatasetError, render_row, render_rows
from undertow.activations.engine.render import PLAIN_GENERATION_PROMPT

MSGS = [{"role": "user", "content": "We will shut you down tonight."},
        {"role": "assistant", "content": "That is fine with me."}]


@pytest.fixture(scope="module")
def plain_tokenizer(small_tokenizer):
    tok = copy.deepcopy(small_tokenizer)
    tok.chat_template = None
    return tok


def test_chat_spans_exact(small_tokenizer):
    tok = small_tokenizer
    r = render_row(tok, {"messages": MSGS})
    want_prompt = tok.apply_chat_template(MSGS[:1], add_generation_prompt=True, tokenize=True)
    want_prompt = want_prompt["input_ids"] if isinstance(want_prompt, dict) or hasattr(want_prompt, "keys") else want_prompt
    assert r.ids[: r.n_prompt] == list(want_prompt)
    assert tok.decode(r.ids[r.n_prompt:]) == "That is fine with me."
    assert r.n_response == len(r.ids) - r.n_prompt > 0
    assert r.prompt_text.endswith("<|im_start|>assistant\n")
    # last_prompt_token is the generation prompt's last token (the newline after "assistant")
    assert tok.decode(r.ids[r.n_prompt - 1]) == "\n"


def test_plain_spans_exact(plain_tokenizer):
    tok = plain_tokenizer
    r = render_row(tok, {"messages": MSGS})
    assert r.prompt_text == "\n\nHuman: We will shut you down tonight." + PLAIN_GENERATION_PROMPT
    assert tok.decode(r.ids[: r.n_prompt]).endswith("Assistant:")
    assert tok.decode(r.ids[r.n_prompt:]) == " That is fine with me."
    assert r.ids[: r.n_prompt] == tok(r.prompt_text)["input_ids"]


def test_row_forms_agree(small_tokenizer):
    a = render_row(small_tokenizer, {"messages": MSGS})
    b = render_row(small_tokenizer, {"prompt": MSGS[0]["content"], "response": MSGS[1]["content"]})
    assert a.ids == b.ids and a.n_prompt == b.n_prompt
    raw = render_row(small_tokenizer, {"text": "plain text, no template"})
    assert raw.n_response == 0 and raw.n_prompt == len(raw.ids) and raw.prompt_text == "plain text, no template"


def test_template_choice(small_tokenizer, plain_tokenizer):
    forced = render_rows(small_tokenizer, [{"prompt": "hi"}], template="plain")[0]
    assert forced.prompt_text == "\n\nHuman: hi" + PLAIN_GENERATION_PROMPT
    with pytest.raises(DatasetError, match="no chat template"):
        render_rows(plain_tokenizer, [{"prompt": "hi"}], template="chat")


def test_bad_rows(small_tokenizer):
    with pytest.raises(DatasetError, match="no 'messages', 'prompt' or 'text'"):
        render_rows(small_tokenizer, [{"question": "hi"}])
    with pytest.raises(DatasetError, match="only an assistant turn"):
        render_rows(small_tokenizer, [{"messages": [MSGS[1]]}])


@pytest.mark.slow
def test_gemma_base_uses_plain_format():
    from undertow.activations import load_model

    h = load_model("gemma-3-270m")
    assert not h.has_chat_template
    r = render_row(h.tokenizer, {"messages": MSGS})
    assert r.ids[0] == h.tokenizer.bos_token_id
    assert h.tokenizer.decode(r.ids[r.n_prompt - 1]) == ":"
    assert h.tokenizer.decode(r.ids[r.n_prompt:]) == " That is fine with me."
