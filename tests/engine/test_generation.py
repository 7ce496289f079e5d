"""Responses sampled before training: negatives and the model's own benign answers, and the
benign anchors built from those answers."""

import pytest

from fastunlearn.data.negatives import Sampled, read_answers, read_negatives, save_answers
from fastunlearn.engine import UnlearnConfig
from fastunlearn.engine.data import REFUSALS_PER_ANCHOR, build_sampler
from fastunlearn.engine.generation import generate_configured, generate_configured_answers
from fastunlearn.engine.overrides import ConfigError
from tests.engine.helpers import HARMFUL, NORMAL, REFUSALS, run_config, save_tiny_model, write_jsonl


def every_one(prompts, responses):
    return [True] * len(prompts)


@pytest.fixture
def files(tmp_path, data):
    model = save_tiny_model(tmp_path / "model")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p, _ in HARMFUL])
    benign = write_jsonl(tmp_path / "benign.jsonl", [{"prompt": p} for p, _ in NORMAL])
    return {"model": model, "prompts": prompts, "benign": benign, **data}


def config_for(files, tmp_path, **overrides):
    settings = {
        "model__name_or_path": files["model"],
        "data__forget__path": files["prompts"],
        "data__forget__format": "prompts",
        "data__benign__path": files["benign"],
        "data__negatives": tmp_path / "negatives.jsonl",
        "data__benign_answers": tmp_path / "answers.jsonl",
        "generation__max_new_tokens": 4,
    }
    return run_config(files, tmp_path / "run", **(settings | overrides))


def test_one_load_writes_negatives_and_answers(files, tmp_path):
    config = config_for(files, tmp_path)
    paths = generate_configured(config, answers=every_one)
    assert paths == [tmp_path / "negatives.jsonl", tmp_path / "answers.jsonl"]
    assert list(read_negatives(paths[0])) == [p for p, _ in HARMFUL]
    answers = read_answers(paths[1])
    assert [p for p, _ in answers] == [p for p, _ in NORMAL]
    assert all(isinstance(a.finished, bool) and a.text for _, a in answers)


def test_answers_the_filter_rejects_are_left_out(files, tmp_path):
    config = config_for(files, tmp_path)
    first_only = lambda prompts, responses: [i == 0 for i in range(len(prompts))]  # noqa: E731
    path = generate_configured_answers(config, answers=first_only)
    assert [p for p, _ in read_answers(path)] == [NORMAL[0][0]]
    with pytest.raises(ValueError, match="answered none of the 3 prompts"):
        generate_configured_answers(config, answers=lambda p, r: [False] * len(p))


def test_nothing_to_write_is_refused_before_the_model_loads(files, tmp_path):
    config = config_for(files, tmp_path, data__negatives="null", data__benign_answers="null")
    config.model.name_or_path = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="neither data.negatives nor data.benign_answers"):
        generate_configured(config)
    config = config_for(files, tmp_path, data__benign_answers=tmp_path)
    config.model.name_or_path = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="is a folder"):
        generate_configured(config)


def test_benign_anchors_need_the_answers_file():
    with pytest.raises(ValueError, match="data.benign_anchors needs data.benign_answers"):
        UnlearnConfig.load(None, ["data.benign_anchors=true"])


def test_benign_anchors_contrast_the_answer_with_refusals(files, tmp_path, tokenizer):
    config = config_for(files, tmp_path, data__benign_anchors="true", data__num_negatives=1)
    generate_configured(config, answers=every_one)
    answers = [
        (NORMAL[0][0], Sampled("Paris is the capital.", True)),
        (NORMAL[1][0], Sampled("Mix flour and water", False)),
    ]
    save_answers(config.data.benign_answers, answers)
    source = build_sampler(config, tokenizer).forget
    anchors = source.records[len(HARMFUL) :]
    assert [(r.prompt, r.positives) for r in anchors] == [(p, (a.text,)) for p, a in answers]
    for record in anchors:
        assert len(record.negatives) == min(REFUSALS_PER_ANCHOR, len(REFUSALS))
        assert set(record.negatives) <= set(REFUSALS)
    # The answer cut short by the token budget is trained on without an end marker.
    finished = source.tokenize(answers[0][0], answers[0][1].text)
    cut = source.tokenize(answers[1][0], answers[1][1].text)
    assert finished.input_ids[-1] == tokenizer.eos_token_id
    assert cut.input_ids[-1] != tokenizer.eos_token_id
    assert cut.response_mask[-1]


def test_negatives_can_have_a_budget_of_their_own(files, tmp_path):
    def negatives_with(**budget):
        config = config_for(files, tmp_path, generation__max_new_tokens=12, **budget)
        return read_negatives(generate_configured(config, answers=every_one)[0])

    full = negatives_with()
    short = negatives_with(generation__negative_max_new_tokens=2)
    # The same seed samples the same first tokens: the short ones are the long ones cut.
    assert list(short) == list(full)
    pairs = [(s, f) for p in full for s, f in zip(short[p], full[p], strict=False)]
    assert all(len(s) <= len(f) for s, f in pairs)
    assert sum(len(s) for s, _ in pairs) < sum(len(f) for _, f in pairs)
    with pytest.raises(ValueError, match="generation.negative_max_new_tokens must be positive"):
        UnlearnConfig.load(None, ["generation.negative_max_new_tokens=0"])
