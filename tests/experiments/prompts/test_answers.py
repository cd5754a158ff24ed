from __future__ import annotations

from undertow.experiments.prompts.answers import answer_rows

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
