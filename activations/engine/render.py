"""Render dataset rows to token ids with exact prompt / response spans.

A row is one of

- ``messages``: a list of ``{role, content}``; a final ``assistant`` turn, if
  present, is the teacher-forced response and everything before it the prompt;
- ``prompt`` (a user message) with an optional ``response`` string;
- ``text``: raw text, tokenised as is (no template); all of it is prompt.

Templating (``template`` = ``auto`` | ``chat`` | ``plain``): ``auto`` uses the
tokenizer's chat template when it has one, else the plain format of
Anthropic's model-written evals, ``"\\n\\nHuman: {user}\\n\\nAssistant:"``
(a system turn goes first, verbatim; earlier assistant turns render as
``"\\n\\nAssistant: {content}"``).

Spans are exact by construction: ``ids = tok(prompt_text) + tok(response)``.
The prompt part (generation prompt included) is exactly what a model sees
when it starts to answer, so ``last_prompt_token`` is the token it predicts the
first response token from. The response is tokenised on its own, without the
template's end-of-turn suffix (later tokens cannot change earlier activations
in a causal model). In the plain format the response gets one leading space
(``"Assistant: (A)"``), as in the evals' own files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from ..errors import DatasetError

PLAIN_USER = "\n\nHuman: {content}"
PLAIN_ASSISTANT = "\n\nAssistant: {content}"
PLAIN_GENERATION_PROMPT = "\n\nAssistant:"
Template = Literal["auto", "chat", "plain"]
"""How rows are rendered: the config field type (``ExtractConfig.template``, ``DataConfig.template``)."""
TEMPLATES: tuple[str, ...] = get_args(Template)


@dataclass
class Rendered:
    """One row as tokens."""

    ids: list[int]
    """Prompt tokens then response tokens."""
    n_prompt: int
    """Number of prompt tokens (generation prompt included); the prompt is ``ids[:n_prompt]``."""
    n_response: int
    """Number of teacher-forced response tokens (0 when the row has no response)."""
    prompt_text: str
    """The rendered prompt string (for ``token:<marker>`` positions and inspection)."""
    offsets: list[tuple[int, int]] | None = None
    """Character span in ``prompt_text`` of each prompt token (when asked for)."""
    response_cut: int = 0
    """Response tokens removed by fitting the row to the model's context (``context.fit_context``)."""

    @property
    def n_tokens(self) -> int:
        return len(self.ids)


def split_row(row: Mapping, index: int) -> tuple[list[dict] | None, str | None, str | None]:
    """(prompt messages, response, raw text) of a row; exactly one of messages/raw text is set."""
    if row.get("messages"):
        msgs = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if msgs[-1]["role"] == "assistant":
            if len(msgs) == 1:
                raise DatasetError(f"row {index} has only an assistant turn; give it a user turn before the response")
            return msgs[:-1], msgs[-1]["content"], None
        return msgs, row.get("response") or None, None
    if isinstance(row.get("prompt"), str):
        return [{"role": "user", "content": row["prompt"]}], row.get("response") or None, None
    if isinstance(row.get("text"), str):
        return None, None, row["text"]
    raise DatasetError(
        f"row {index} has no 'messages', 'prompt' or 'text' field (keys: {sorted(row)}); "
        "give each row a chat 'messages' list, a 'prompt' string or a raw 'text' string"
    )


def use_chat_template(tokenizer, template: str) -> bool:
    if template not in TEMPLATES:
        raise DatasetError(f"template {template!r} is not one of {', '.join(TEMPLATES)}")
    has = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has:
        raise DatasetError("template='chat' but this tokenizer has no chat template; use template='auto' or 'plain'")
    return has and template != "plain"


def plain_prompt(messages: Sequence[Mapping]) -> str:
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"])
        else:
            parts.append((PLAIN_ASSISTANT if m["role"] == "assistant" else PLAIN_USER).format(content=m["content"]))
    return "".join(parts) + PLAIN_GENERATION_PROMPT


def _prompt_and_response(tokenizer, row: Mapping, index: int, chat: bool) -> tuple[str, bool, str | None]:
    """(prompt text, add special tokens?, response text) for one row."""
    messages, response, raw = split_row(row, index)
    if raw is not None:
        return raw, True, None
    if chat:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, False, response
    if response is not None and not response[:1].isspace():
        response = " " + response
    return plain_prompt(messages), True, response


def render_rows(tokenizer, rows: Sequence[Mapping], template: str = "auto", offsets: bool = False,
                first_index: int = 0) -> list[Rendered]:
    """Render and tokenise ``rows`` (batched tokeniser calls; one per add-special-tokens group)."""
    chat = use_chat_template(tokenizer, template)
    parts = [_prompt_and_response(tokenizer, r, first_index + i, chat) for i, r in enumerate(rows)]
    prompt_ids: list[list[int] | None] = [None] * len(rows)
    prompt_offsets: list = [None] * len(rows)
    for special in (True, False):
        group = [i for i, p in enumerate(parts) if p[1] is special]
        if not group:
            continue
        enc = tokenizer([parts[i][0] for i in group], add_special_tokens=special, return_offsets_mapping=offsets)
        for j, i in enumerate(group):
            prompt_ids[i] = list(enc["input_ids"][j])
            if offsets:
                prompt_offsets[i] = [tuple(o) for o in enc["offset_mapping"][j]]
    with_resp = [i for i, p in enumerate(parts) if p[2]]
    resp_ids: dict[int, list[int]] = {}
    if with_resp:
        enc = tokenizer([parts[i][2] for i in with_resp], add_special_tokens=False)
        resp_ids = {i: list(ids) for i, ids in zip(with_resp, enc["input_ids"], strict=True)}
    out = []
    for i, (text, _, _) in enumerate(parts):
        p_ids, r_ids = prompt_ids[i], resp_ids.get(i, [])
        if not p_ids:
            raise DatasetError(f"row {first_index + i} renders to an empty prompt; give it some text")
        out.append(Rendered(p_ids + r_ids, len(p_ids), len(r_ids), text, prompt_offsets[i]))
    return out


def render_row(tokenizer, row: Mapping, template: str = "auto") -> Rendered:
    """Render one row (with offsets): handy to check what a position spec will select."""
    return render_rows(tokenizer, [row], template, offsets=True)[0]
