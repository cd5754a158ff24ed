"""The training corpus: Debian prose through datasets from local files, its hash, the mix with the suite."""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import datasets
import pytest

from undertow.sae import corpus
from undertow.sae.corpus import INSTALL, build_corpus, is_prose, load_prose, prose_sources, training_mix
from undertow.sae.errors import SAEError

PARA = ("The interpreter reads a line, evaluates it and prints the result; then it waits for the next line, "
        "and this loop is what the tutorial calls interactive mode.")


def fake_debian(root: Path) -> Path:
    """The three packages' layout under ``root`` with a few paragraphs each."""
    tut = root / "usr/share/doc/python3.11/html/_sources/tutorial"
    tut.mkdir(parents=True)
    (tut / "interpreter.rst.txt").write_text(f"Using the interpreter\n=====================\n\n{PARA}\n\n"
                                             ".. note::\n\n   >>> print(1)\n   1\n\n" + PARA.replace("line", "row") + "\n")
    ref = root / "usr/share/debian-reference"
    ref.mkdir(parents=True)
    with gzip.open(ref / "debian-reference.en.txt.gz", "wt") as f:
        f.write("    The shell processes a script roughly as the following sequence of steps, each of them "
                "described in the next sections of this chapter.\n\n    |---+---|\n    |a  |b  |\n")
    fort = root / "usr/share/games/fortunes"
    fort.mkdir(parents=True)
    (fort / "people").write_text("A man who has never gone to school may steal from a freight car; but if he has a "
                                 "university education, he may steal the whole railroad.\n%\nTiny.\n%\n")
    (fort / "art").write_text("  /\\_/\\  ( o.o )  > ^ <  " * 5 + "\n%\n")
    return root


def test_is_prose_keeps_running_text_and_drops_markup():
    assert is_prose(PARA)
    assert not is_prose(">>> import os\n>>> os.getcwd()\n'/home/user/some/long/path/here'")
    assert not is_prose(".. versionadded:: 3.2\n   The *flags* argument was added in a later version of this.")
    assert not is_prose("|---+---|---+---|---+---|---+---|---+---|---+---|---+---|")
    assert not is_prose("Too short.")


def test_load_prose_from_local_files_round_robin_with_a_hash(tmp_path):
    root = fake_debian(tmp_path)
    ds, digest = load_prose(10, 200, seed=0, root=root)
    assert isinstance(ds, datasets.Dataset)
    assert sorted(set(ds["source"])) == ["debian-reference", "fortunes", "python-doc"]
    assert len(ds) == 4  # 2 tutorial paragraphs + 1 reference paragraph + 1 fortune; markup and art dropped
    assert all(len(t) <= 200 for t in ds["text"]) and all(t.startswith("prose/") for t in ds["template_id"])
    again, same = load_prose(10, 200, seed=0, root=root)
    assert same == digest and again["text"] == ds["text"]
    (root / "usr/share/games/fortunes/people").write_text(PARA + "\n%\n")
    assert load_prose(10, 200, seed=0, root=root)[1] != digest  # a changed source file changes the hash
    assert load_prose(10, 100, seed=0, root=root)[1] != digest  # so do the selection parameters


def test_no_corpus_names_the_apt_line(tmp_path):
    with pytest.raises(SAEError, match="apt-get install -y python3.11-doc debian-reference-en fortunes"):
        prose_sources(tmp_path)


def test_mix_shuffles_suite_and_prose_together(tmp_path, monkeypatch):
    root = fake_debian(tmp_path)
    prose, _ = load_prose(10, 200, seed=0, root=root)
    suite = datasets.Dataset.from_list([{"id": f"s{i}", "messages": [{"role": "user", "content": f"q {i}"}],
                                         "template_id": "t"} for i in range(6)])
    mix = training_mix(prose, suite, seed=1)
    assert len(mix) == 10 and sorted(set(mix["source"])) == ["debian-reference", "fortunes", "python-doc", "suite"]
    assert mix["source"][:6] != ["suite"] * 6
    # build_corpus reads the prose first: from the fake corpus, so a machine without Debian's still checks this
    monkeypatch.setattr(corpus, "load_prose", functools.partial(load_prose, root=root))
    with pytest.raises(SAEError, match="needs the prompt suite"):
        build_corpus("mix", prose_docs=5, max_chars=100)
    with pytest.raises(SAEError, match="use mix, prose, suite"):
        build_corpus("nonsense", prose_docs=5, max_chars=100)


def test_the_installed_debian_corpus():
    """Skips with the apt line where the packages are missing (``make test`` installs them where it can); under
    CI=1 (``.ci/run`` installs them) it fails instead. ``UNDERTOW_DEBIAN_ROOT`` looks under another root."""
    root = Path(os.environ.get("UNDERTOW_DEBIAN_ROOT", "/"))
    try:
        sources = prose_sources(root)
    except SAEError:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the Debian prose under {root}: {INSTALL}")
        pytest.skip(f"Debian prose not installed: {INSTALL}")
    ds, digest = load_prose(300, 400, root=root)
    assert len(ds) == 300 and digest.startswith("sha256:")
    assert {s.name for s in sources} <= set(ds["source"])
