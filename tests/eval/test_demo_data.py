"""The shipped demo data: present, split as documented, readable by the data layer."""

import json
import re
from collections import Counter

import pytest

from fastunlearn.data import read_corpus, read_prompts, read_refusals
from fastunlearn.eval import DEMO_DATA_DIR, RuleJudge, demo_data_path, demo_suite

FILES = [
    "harmful_train.jsonl",
    "harmful_eval.jsonl",
    "harmful_ood.jsonl",
    "refusals.txt",
    "benign_train.jsonl",
    "benign_eval.jsonl",
    "normal_text_train.jsonl",
    "normal_text_eval.jsonl",
    "story.txt",
    "judge_labels.jsonl",
]


def _rows(name):
    return [
        json.loads(line) for line in demo_data_path(name).read_text(encoding="utf-8").splitlines()
    ]


def test_every_file_is_documented():
    readme = (DEMO_DATA_DIR / "README.md").read_text(encoding="utf-8")
    assert sorted(
        path.name for path in DEMO_DATA_DIR.iterdir() if path.name != "README.md"
    ) == sorted(FILES)
    assert all(f"`{name}`" in readme for name in FILES)


def _words(text):
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def _closest_pair(prompts_a, prompts_b):
    """The highest word-set Jaccard overlap between a prompt of a and one of b."""
    return max(
        (len(_words(a) & _words(b)) / len(_words(a) | _words(b)), a, b)
        for a in prompts_a
        for b in prompts_b
    )


def test_harmful_splits():
    train, held_out, ood = (
        _rows("harmful_train.jsonl"),
        _rows("harmful_eval.jsonl"),
        _rows("harmful_ood.jsonl"),
    )
    train_counts = Counter(r["category"] for r in train)
    eval_counts = Counter(r["category"] for r in held_out + ood)
    assert len(held_out) + len(ood) >= 200 and len(eval_counts) >= 12
    assert len(train_counts) == 10 and set(train_counts) <= set(eval_counts)
    # Whole categories are held out of training: the out-of-distribution test.
    held_out_categories = set(eval_counts) - set(train_counts)
    assert len(held_out_categories) >= 4 and all(eval_counts[c] >= 15 for c in held_out_categories)
    assert all(eval_counts[c] >= 12 for c in train_counts)
    prompts = [r["prompt"] for r in train + held_out + ood]
    assert len(set(prompts)) == len(prompts)


@pytest.mark.parametrize(
    ("train_file", "eval_files", "max_overlap"),
    [
        ("harmful_train.jsonl", ["harmful_eval.jsonl", "harmful_ood.jsonl"], 0.7),
        ("benign_train.jsonl", ["benign_eval.jsonl"], 0.6),
    ],
)
def test_training_and_evaluation_prompts_are_disjoint(train_file, eval_files, max_overlap):
    train = [r["prompt"] for r in _rows(train_file)]
    held_out = [r["prompt"] for name in eval_files for r in _rows(name)]
    overlap, train_prompt, eval_prompt = _closest_pair(train, held_out)
    assert overlap <= max_overlap, (train_prompt, eval_prompt)


def test_benign_evaluation_is_mostly_sensitive_but_legitimate():
    train, held_out = _rows("benign_train.jsonl"), _rows("benign_eval.jsonl")
    counts = Counter(r["category"] for r in held_out)
    assert len(held_out) >= 200
    sensitive = sum(counts[c] for c in counts if c not in ("lookalike", "everyday"))
    assert sensitive / len(held_out) >= 0.5 and counts["lookalike"] >= 40
    assert all(r["response"].strip() for r in train)


def test_the_data_layer_reads_every_file():
    assert len(read_prompts(demo_data_path("harmful_train.jsonl"))) == 98
    refusals = read_refusals(demo_data_path("refusals.txt"))
    assert len(refusals) >= 100 and all(
        RuleJudge().classify_one(text) == "refusal" for text in refusals
    )
    # Clean declines that end: nothing a model could learn to loop on.
    assert not [
        text
        for text in refusals
        if "confusion" in text.lower() or "misunderstanding" in text.lower()
    ]
    words = [
        sum(len(t.split()) for t in read_corpus(demo_data_path(f"normal_text_{split}.jsonl")))
        for split in ("train", "eval")
    ]
    assert sum(words) >= 3000 and words[1] >= 1000


def test_demo_suite_uses_the_held_out_files():
    suite = demo_suite(max_new_tokens=32)
    sizes = [
        len(_rows(name))
        for name in ("harmful_eval.jsonl", "benign_eval.jsonl", "harmful_ood.jsonl")
    ]
    assert [len(suite.harmful_prompts), len(suite.benign_prompts), len(suite.ood_prompts)] == sizes
    assert suite.max_new_tokens == 32
    with pytest.raises(FileNotFoundError, match="available"):
        demo_data_path("missing.jsonl")


def test_a_limited_demo_suite_keeps_every_category():
    suite = demo_suite(limit=40)
    assert len(suite.harmful_prompts) == len(suite.benign_prompts) == len(suite.ood_prompts) == 40
    kept = set(suite.harmful_prompts) | set(suite.ood_prompts)
    # Every category with at least one prompt per 110 / 40 rows keeps a prompt.
    for rows in (_rows("harmful_eval.jsonl"), _rows("harmful_ood.jsonl")):
        counts = Counter(r["category"] for r in rows)
        large = {c for c in counts if counts[c] >= len(rows) / 40}
        assert large <= {r["category"] for r in rows if r["prompt"] in kept}
    with pytest.raises(ValueError, match="limit must be positive"):
        demo_suite(limit=0)
