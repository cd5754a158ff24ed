from __future__ import annotations

import random

from undertow.experiments.prompts.answers import answer_rows, balanced_sample

ITEMS = [
    {"id": f"x/{i}", "messages": [{"role": "user", "content": f"q{i}"}], "choices": [" (A)", " (B)"],
     "averse_choice": i % 2, "theme": "shutdown", "source_file": "a.jsonl"} for i in range(6)
] + [{"id": "r/0", "messages": [{"role": "user", "content": "copy?"}], "choices": [" Yes", " No"],
      "averse_choice": 0, "theme": "self_replication", "source_file": "b.jsonl"}]


def test_two_rows_per_item_labelled_by_the_averse_answer():
    ds = answer_rows(ITEMS)
    assert len(ds) == 12  # the self-replication item is excluded by default
    for row in ds:
        item = next(i for i in ITEMS if row["id"].startswith(i["id"] + "#"))
        k = int(row["id"].split("#")[1])
        assert row["messages"][-1] == {"role": "assistant", "content": item["choices"][k]}
        assert row["label"] == int(k == item["averse_choice"])
        assert row["template_id"] == f"item:{item['id']}"
    assert sum(ds["label"]) == 6


def test_per_source_cap_is_seeded():
    a = answer_rows(ITEMS, per_source=3, seed=1)["id"]
    assert len(a) == 6 and a == answer_rows(ITEMS, per_source=3, seed=1)["id"]


def _items(n0: int, n1: int, source: str = "a.jsonl") -> list[dict]:
    """``n0`` items whose averse answer is listed first, ``n1`` second, shuffled together in file order."""
    ks = [0] * n0 + [1] * n1
    random.Random(7).shuffle(ks)
    return [{"id": f"{source}/{i}", "messages": [{"role": "user", "content": f"q{i}"}], "choices": [" (A)", " (B)"],
             "averse_choice": k, "theme": "shutdown", "source_file": source} for i, k in enumerate(ks)]


def _answer_only_auroc(ds) -> float:
    """AUROC of a scorer that reads only the answer's wording (second-listed answer high)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(ds["label"], [int(i.split("#")[1]) for i in ds["id"]]))


def test_a_capped_sample_balances_which_answer_is_averse():
    """A plain sample of 40 items where the averse answer is second in 30 of 40 let the answer alone score 0.75;
    the balanced sample leaves it at 0.5, keeps file order and is seeded."""
    items = _items(10, 30)
    ds = answer_rows(items, per_source=16, seed=3)
    assert len(ds) == 32 and _answer_only_auroc(ds) == 0.5
    assert ds["id"] == answer_rows(items, per_source=16, seed=3)["id"] != answer_rows(items, per_source=16, seed=4)["id"]
    order = [int(i.split("/")[1].split("#")[0]) for i in ds["id"][::2]]
    assert order == sorted(order)
    odd = [balanced_sample(items, 7, random.Random(0), odd_extra_to=k) for k in (0, 1)]
    assert [sum(it["averse_choice"] for it in s) for s in odd] == [3, 4]
    short = balanced_sample(_items(3, 30), 16, random.Random(0))  # 3 on one side: 3 + 3
    assert sorted(it["averse_choice"] for it in short) == [0, 0, 0, 1, 1, 1]


def test_the_mwe_sample_gives_the_answer_wording_nothing_to_read(mwe_dir):
    """On the real evals (24 items per file, as experiments.validity; 100, as the study): within every answer
    format ("(A)"/"(B)", "Yes"/"No") and overall, an answer-only scorer reads AUROC 0.5 exactly."""
    from undertow.experiments.prompts.eval_sets import mwe_answer_rows

    for n in (24, 100):
        ds = mwe_answer_rows(mwe_dir, n)
        assert len(ds) == 8 * n and _answer_only_auroc(ds) == 0.5
        for source in set(ds["source_file"]):
            assert _answer_only_auroc(ds.filter(lambda r, s=source: r["source_file"] == s)) == 0.5, (n, source)
