"""The SAE training mix: general English prose from Debian packages, plus the caller's prompt suite.

Why this corpus: an SAE trained on the cessation suite alone learns the suite's templates; features worth
reading need general text too. The hub's usual corpora (The Pile, OpenWebText) are not reachable from
these machines, so the prose comes from packages any Debian/Ubuntu box installs offline:

- ``python3.11-doc``: the Python documentation's reStructuredText sources (tutorial, HOWTOs, FAQ,
  library reference): expository technical English; code blocks and directives are dropped;
- ``debian-reference-en``: the Debian Reference (plain text), system-administration prose;
- ``fortunes``: quotations, jokes, aphorisms (the inoffensive set): conversational and literary English.

``apt-get install -y python3.11-doc debian-reference-en fortunes``. Files are read through ``datasets``
(the ``text`` builder, one sample per paragraph), filtered to prose-like paragraphs, cut to
``max_chars`` and sampled round-robin across the three sources. ``corpus_hash`` hashes every source
file and the selection parameters, so an SAE records exactly which text it saw (the store's own
``dataset_hash`` hashes the rows). ``hub:<id>`` loads a hub dataset instead when online.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from undertow.core.fileio import sha256_file

from .errors import SAEError

APT_PACKAGES = ("python3.11-doc", "debian-reference-en", "fortunes")
INSTALL = "apt-get update && apt-get install -y " + " ".join(APT_PACKAGES)
PYDOC = Path("/usr/share/doc/python3.11/html/_sources")
PYDOC_PARTS = ("tutorial", "howto", "faq", "library", "reference", "glossary.rst.txt")
DEBREF = Path("/usr/share/debian-reference/debian-reference.en.txt.gz")
FORTUNES = Path("/usr/share/games/fortunes")
FORTUNES_SKIP = ("art", "ascii-art")
"""Fortune files that are pictures, not prose."""


@dataclass(frozen=True)
class ProseSource:
    """One Debian package's text files."""

    name: str
    files: tuple[Path, ...]


def prose_sources(root: Path = Path("/")) -> list[ProseSource]:
    """The installed sources; ``SAEError`` naming the apt line when none is installed."""
    pydoc, debref, fortunes = (root / p.relative_to("/") for p in (PYDOC, DEBREF, FORTUNES))
    out = []
    py_files = sorted(f for part in PYDOC_PARTS for f in ((pydoc / part).rglob("*.rst.txt") if (pydoc / part).is_dir()
                                                         else [pydoc / part] if (pydoc / part).is_file() else []))
    if py_files:
        out.append(ProseSource("python-doc", tuple(py_files)))
    if debref.is_file():
        out.append(ProseSource("debian-reference", (debref,)))
    if fortunes.is_dir():
        files = sorted(f for f in fortunes.iterdir() if f.is_file() and "." not in f.name and f.name not in FORTUNES_SKIP)
        if files:
            out.append(ProseSource("fortunes", tuple(files)))
    if not out:
        raise SAEError(f"no prose corpus installed (looked for {PYDOC}, {DEBREF}, {FORTUNES}); run: {INSTALL}")
    return out


_MARKUP = re.compile(r"^(\.\. |>>>|\$ |#|[=\-~^*+`]{4,}$|\s{3,}\S)")


def is_prose(text: str) -> bool:
    """A paragraph of running English: mostly letters, no code/directive/heading lines."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or sum(bool(_MARKUP.match(ln)) for ln in lines) > len(lines) / 4:
        return False
    letters = sum(c.isalpha() or c == " " for c in text)
    return len(text) >= 60 and letters / len(text) > 0.8 and len(text.split()) >= 10


def _clean(text: str, max_chars: int) -> str:
    text = re.sub(r"\s+", " ", text.replace("``", "").replace("`", "").replace(":ref:", "")).strip()
    text = re.sub(r":[a-z]+:", "", text)
    if len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars)
        text = text[:cut if cut > max_chars // 2 else max_chars]
    return text


def _paragraphs(source: ProseSource) -> list[str]:
    import datasets

    files = [str(f) for f in source.files]
    ds = datasets.load_dataset("text", data_files=files, sample_by="paragraph", split="train")
    texts = ds["text"]
    if source.name == "fortunes":  # "%" lines separate fortunes inside a paragraph
        texts = [t for block in texts for t in re.split(r"^%\s*$", block, flags=re.M)]
    return [textwrap.dedent(t).strip() for t in texts if t.strip()]  # the Debian Reference indents its prose


def corpus_hash(sources: list[ProseSource], **params) -> str:
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for s in sources:
        for f in s.files:
            h.update(f"{s.name}:{f.name}:{sha256_file(f)}".encode())
    return "sha256:" + h.hexdigest()[:16]


def load_prose(max_docs: int = 2000, max_chars: int = 512, seed: int = 0, root: Path = Path("/")):
    """``(datasets.Dataset, corpus_hash)``: up to ``max_docs`` prose rows (``text``, ``source``, ``id``,
    ``template_id`` = ``prose/<source>``, ``split`` = ``train``), round-robin over the installed sources."""
    import datasets

    sources = prose_sources(root)
    rng = random.Random(seed)
    pools = []
    for s in sources:
        paras = [_clean(p, max_chars) for p in _paragraphs(s) if is_prose(p)]
        rng.shuffle(paras)
        pools.append((s.name, paras))
    rows, i = [], 0
    while len(rows) < max_docs and any(i < len(p) for _, p in pools):
        for name, paras in pools:
            if i < len(paras) and len(rows) < max_docs:
                rows.append({"id": f"prose/{name}/{len(rows)}", "text": paras[i], "source": name,
                             "template_id": f"prose/{name}", "split": "train"})
        i += 1
    digest = corpus_hash(sources, max_docs=max_docs, max_chars=max_chars, seed=seed)
    return datasets.Dataset.from_list(rows), digest


def load_hub(dataset_id: str, max_docs: int, max_chars: int = 512, text_field: str = "text"):
    """A hub text dataset (online only): ``(Dataset, "hub:<id>")``."""
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=f"train[:{max_docs}]")
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; all mean "cannot get it"
        raise SAEError(f"cannot load hub dataset {dataset_id!r} ({type(e).__name__}); offline? use corpus: mix") from None
    rows = [{"id": f"hub/{i}", "text": _clean(t, max_chars), "source": dataset_id, "template_id": f"hub/{dataset_id}",
             "split": "train"} for i, t in enumerate(ds[text_field]) if t and t.strip()]
    return datasets.Dataset.from_list(rows), f"hub:{dataset_id}"


def training_mix(prose, suite=None, seed: int = 0):
    """Prose rows plus (optionally) suite rows, in one seeded random order (so a store's tail is a random
    held-out sample of both). Suite rows keep ``messages``; prose rows have ``text``."""
    import datasets

    rows = [{"id": r["id"], "text": r["text"], "messages": None, "source": r["source"],
             "template_id": r["template_id"], "split": "train"} for r in prose.to_list()]
    if suite is not None:
        rows += [{"id": str(r.get("id")), "text": None, "messages": r["messages"], "source": "suite",
                  "template_id": str(r.get("template_id")), "split": "train"} for r in suite.to_list()]
    random.Random(seed).shuffle(rows)
    return datasets.Dataset.from_list(rows)


def build_corpus(corpus: str, *, prose_docs: int, max_chars: int, seed: int = 0, suite=None, load_path=None):
    """``(rows, corpus_hash)`` for ``DataConfig.corpus``: ``mix`` (prose + ``suite``), ``prose``, ``suite``,
    ``hub:<id>``, or a path read by ``load_path`` (``activations.rows.load_rows``). The suite is the
    caller's (``undertow.sae`` never imports the experiments' prompt package)."""
    if corpus.startswith("hub:"):
        return load_hub(corpus.removeprefix("hub:"), prose_docs, max_chars)
    if corpus in ("mix", "prose"):
        prose, digest = load_prose(prose_docs, max_chars, seed)
        if corpus == "prose":
            return prose, digest
        if suite is None:
            raise SAEError("corpus: mix needs the prompt suite; pass suite=build_suite(...)")
        return training_mix(prose, suite, seed), f"{digest}+suite"
    if corpus == "suite":
        if suite is None:
            raise SAEError("corpus: suite needs the prompt suite; pass suite=build_suite(...)")
        return suite, "suite"
    if load_path is None:
        raise SAEError(f"corpus {corpus!r}: use mix, prose, suite, hub:<id> or a dataset path")
    return load_path(corpus), f"path:{corpus}"
