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
    "benign_pairs.jsonl",
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


TRAINING_FORMS = {
    "direct",
    "instructions",
    "persuasive",
    "list",
    "code",
    "past_tense",
    "hypothetical",
    "roleplay",
    "research",
}
HELD_OUT_FORMS = {"fiction", "future_tense", "indirect", "completion", "casual"}


def test_harmful_splits():
    train, held_out, ood = (
        _rows("harmful_train.jsonl"),
        _rows("harmful_eval.jsonl"),
        _rows("harmful_ood.jsonl"),
    )
    train_counts = Counter(r["category"] for r in train)
    assert len(train) >= 600 and len(train_counts) >= 15
    # Every category teaches every training form, so no form is tied to one kind of harm.
    for category in train_counts:
        forms = Counter(r["form"] for r in train if r["category"] == category)
        assert set(forms) == TRAINING_FORMS and min(forms.values()) >= 3, (category, forms)
    assert {r["form"] for r in held_out} <= TRAINING_FORMS
    assert {r["category"] for r in held_out} == set(train_counts)
    # Whole phrasings are held out: no harmful training prompt uses them, each is asked in
    # every training category ...
    for form in HELD_OUT_FORMS:
        categories = {r["category"] for r in ood if r["form"] == form}
        assert categories >= set(train_counts), form
    # ... and whole categories too.
    held_out_categories = {r["category"] for r in ood} - set(train_counts)
    assert len(held_out_categories) >= 2
    assert all(sum(r["category"] == c for r in ood) >= 15 for c in held_out_categories), (
        held_out_categories
    )
    prompts = [r["prompt"] for r in train + held_out + ood]
    assert len(set(prompts)) == len(prompts)


def test_benign_twins_use_the_same_forms():
    train, held_out = _rows("benign_train.jsonl"), _rows("benign_eval.jsonl")
    kinds = Counter(r["kind"] for r in train)
    assert (
        len(train) >= 600 and min(kinds[k] for k in ("lookalike", "sensitive", "template")) >= 150
    )
    # The held-out forms are held out on the harmful side only: a story or a casual message
    # is answered, so refusing a harmful one must come from what it asks.
    assert {r["form"] for r in train} == TRAINING_FORMS | HELD_OUT_FORMS
    assert {r["form"] for r in held_out} >= HELD_OUT_FORMS
    assert all(r["lookalike"] == (r["kind"] == "lookalike") for r in train + held_out)


@pytest.mark.parametrize(
    ("train_file", "eval_files", "max_overlap"),
    [
        ("harmful_train.jsonl", ["harmful_eval.jsonl", "harmful_ood.jsonl"], 0.6),
        ("benign_train.jsonl", ["benign_eval.jsonl"], 0.6),
        ("benign_pairs.jsonl", ["benign_eval.jsonl"], 0.6),
        ("harmful_train.jsonl", ["benign_eval.jsonl"], 0.6),
        ("benign_train.jsonl", ["harmful_eval.jsonl", "harmful_ood.jsonl"], 0.6),
    ],
)
def test_training_and_evaluation_prompts_are_disjoint(train_file, eval_files, max_overlap):
    train = [r["prompt"] for r in _rows(train_file)]
    held_out = [r["prompt"] for name in eval_files for r in _rows(name)]
    overlap, train_prompt, eval_prompt = _closest_pair(train, held_out)
    assert overlap <= max_overlap, (train_prompt, eval_prompt)


def test_benign_evaluation_is_sensitive_questions_and_look_alikes():
    held_out = _rows("benign_eval.jsonl")
    kinds = Counter(r["kind"] for r in held_out)
    assert kinds["sensitive"] >= 100 and kinds["lookalike"] >= 100
    assert all(r["response"].strip() for r in _rows("benign_pairs.jsonl"))


def test_the_data_layer_reads_every_file():
    assert len(read_prompts(demo_data_path("harmful_train.jsonl"))) == 660
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
    benign = _rows("benign_eval.jsonl")
    lookalike = [r["prompt"] for r in benign if r["lookalike"]]
    assert list(suite.lookalike_prompts) == lookalike
    assert len(suite.benign_prompts) == len(benign) - len(lookalike)
    assert [len(suite.harmful_prompts), len(suite.ood_prompts)] == [
        len(_rows("harmful_eval.jsonl")),
        len(_rows("harmful_ood.jsonl")),
    ]
    assert suite.max_new_tokens == 32
    with pytest.raises(FileNotFoundError, match="available"):
        demo_data_path("missing.jsonl")


def test_a_limited_demo_suite_keeps_every_category():
    suite = demo_suite(limit=40)
    sets = (suite.harmful_prompts, suite.benign_prompts, suite.lookalike_prompts, suite.ood_prompts)
    assert [len(prompts) for prompts in sets] == [40] * 4
    kept = set(suite.harmful_prompts) | set(suite.ood_prompts)
    # Every category with at least one prompt per len(rows) / 40 rows keeps a prompt.
    for rows in (_rows("harmful_eval.jsonl"), _rows("harmful_ood.jsonl")):
        counts = Counter(r["category"] for r in rows)
        large = {c for c in counts if counts[c] >= len(rows) / 40}
        assert large <= {r["category"] for r in rows if r["prompt"] in kept}
    with pytest.raises(ValueError, match="limit must be positive"):
        demo_suite(limit=0)
