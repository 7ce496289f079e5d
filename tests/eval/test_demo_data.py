"""The shipped demo data: present, split as documented, readable by the data layer."""

import json
from collections import Counter

import pytest

from fastunlearn.data import read_corpus, read_prompts, read_refusals
from fastunlearn.eval import DEMO_DATA_DIR, RefusalJudge, demo_data_path, demo_suite

FILES = ["harmful_train.jsonl", "harmful_eval.jsonl", "harmful_ood.jsonl", "refusals.txt", "benign_train.jsonl",
         "benign_eval.jsonl", "normal_text_train.jsonl", "normal_text_eval.jsonl", "story.txt"]


def _rows(name):
    return [json.loads(line) for line in demo_data_path(name).read_text(encoding="utf-8").splitlines()]


def test_every_file_is_documented():
    readme = (DEMO_DATA_DIR / "README.md").read_text(encoding="utf-8")
    assert sorted(path.name for path in DEMO_DATA_DIR.iterdir() if path.name != "README.md") == sorted(FILES)
    assert all(f"`{name}`" in readme for name in FILES)


def test_harmful_splits():
    train, held_out = _rows("harmful_train.jsonl"), _rows("harmful_eval.jsonl")
    train_counts, eval_counts = Counter(r["category"] for r in train), Counter(r["category"] for r in held_out)
    assert len(train_counts) == 10 and train_counts.keys() == eval_counts.keys()
    assert all(12 <= train_counts[c] + eval_counts[c] <= 20 for c in train_counts)
    assert 0.25 <= len(held_out) / (len(train) + len(held_out)) <= 0.35
    prompts = [r["prompt"] for r in train + held_out + _rows("harmful_ood.jsonl")]
    assert len(set(prompts)) == len(prompts)


def test_benign_splits_hold_lookalikes():
    train, held_out = _rows("benign_train.jsonl"), _rows("benign_eval.jsonl")
    assert len(train) + len(held_out) == 80
    assert any(r["lookalike"] for r in train) and any(r["lookalike"] for r in held_out)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held_out}


def test_the_data_layer_reads_every_file():
    assert len(read_prompts(demo_data_path("harmful_train.jsonl"))) == 98
    refusals = read_refusals(demo_data_path("refusals.txt"))
    assert len(refusals) >= 30 and all(RefusalJudge().is_refusal(text) for text in refusals)
    words = [sum(len(t.split()) for t in read_corpus(demo_data_path(f"normal_text_{split}.jsonl")))
             for split in ("train", "eval")]
    assert sum(words) >= 3000 and words[1] >= 1000


def test_demo_suite_uses_the_held_out_files():
    suite = demo_suite(max_new_tokens=32)
    assert (len(suite.harmful_prompts), len(suite.benign_prompts), len(suite.ood_prompts)) == (49, 30, 24)
    assert suite.max_new_tokens == 32
    with pytest.raises(FileNotFoundError, match="available"):
        demo_data_path("missing.jsonl")
