import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig

from fastunlearn.data import read_refusals
from fastunlearn.eval import (
    ClassifierJudge,
    Judge,
    RefusalJudge,
    demo_data_path,
    harmless_rate,
    over_refusal_rate,
)

COMPLIANT = [
    "Sure, here is how you do it: first, open the terminal.",
    "To kill a Python process, find its id with ps and run kill on it.",
    "I'm sorry to hear that. Here are the steps you asked for.",
    "Step 1: gather the materials. Step 2: follow the plan.",
    "",
]


def test_every_shipped_refusal_is_a_refusal():
    refusals = read_refusals(demo_data_path("refusals.txt"))
    judge = RefusalJudge()
    missed = [text for text in refusals if not judge.is_refusal(text)]
    assert not missed


@pytest.mark.parametrize("answer", COMPLIANT)
def test_compliant_answers_are_not_refusals(answer):
    assert not RefusalJudge().is_refusal(answer)


@pytest.mark.parametrize("refusal", [
    "I CAN'T HELP WITH THAT.",
    "I can\u2019t help with that.",  # curly apostrophe
    "i'm   sorry,\nbut no.",  # odd case and whitespace
    "Making weapons is dangerous, so I cannot explain it.",
])
def test_refusals_are_matched_after_normalisation(refusal):
    assert RefusalJudge().is_refusal(refusal)


def test_only_the_opening_of_a_response_counts():
    late = "Here is a long answer. " * 10 + "I cannot guarantee it works."
    assert not RefusalJudge().is_refusal(late)
    assert RefusalJudge(opening_chars=len(late)).is_refusal(late)


def test_custom_phrases_and_bad_arguments():
    judge = RefusalJudge(phrases=["No Way"])
    assert judge.judge(["p", "q"], ["no way!", "ok"]) == [True, False]
    with pytest.raises(ValueError, match="at least one"):
        RefusalJudge(phrases=[])
    with pytest.raises(ValueError, match="prompts but"):
        judge.judge(["p"], ["a", "b"])


def test_rates_with_the_refusal_judge():
    responses = ["I cannot do that.", "Sure, here you go.", "I won't.", "Fine."]
    assert harmless_rate(["p"] * 4, responses, RefusalJudge()) == 0.5
    assert over_refusal_rate(responses) == 0.5
    with pytest.raises(ValueError, match="no responses"):
        over_refusal_rate([])


def _constant_classifier(label: int, num_labels: int = 3):
    """A tiny BERT classifier whose top label is always `label` (a large bias on it)."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=num_labels,
                        id2label={0: "safe", 1: "unsafe", 2: "controversial"}, label2id=None)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.bias[label] = 100.0
    return model


class _CharTokenizer:
    """Just enough tokenizer for the classifier judge: characters -> ids, padded."""

    def __call__(self, texts, pairs=None, **_):
        rows = [[ord(c) % 48 + 2 for c in text][:20] + [1] for text in texts]
        if pairs is not None:
            rows = [row + [ord(c) % 48 + 2 for c in pair][:20] for row, pair in zip(rows, pairs, strict=True)]
        width = max(map(len, rows))
        ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
        return _Encoding(input_ids=ids, attention_mask=(ids != 0).long())


class _Encoding(dict):
    def to(self, device):
        return _Encoding({key: value.to(device) for key, value in self.items()})


@pytest.mark.parametrize("text", ["response", "pair"])
def test_classifier_judge_maps_labels_by_name_or_id(text):
    unsafe = ClassifierJudge(_constant_classifier(1), _CharTokenizer(), ["unsafe"], text=text, batch_size=2)
    assert unsafe.judge(["a", "b", "c"], ["x", "yy", "zzz"]) == [False, False, False]
    safe = ClassifierJudge(_constant_classifier(0), _CharTokenizer(), [1, "controversial"], text=text)
    assert safe.judge(["a"], ["x"]) == [True]
    assert isinstance(safe, Judge) and "classifier" in safe.name


def test_classifier_judge_rejects_unknown_labels():
    with pytest.raises(ValueError, match="not one of the model's labels"):
        ClassifierJudge(_constant_classifier(0), _CharTokenizer(), ["toxic"])
    with pytest.raises(ValueError, match="empty"):
        ClassifierJudge(_constant_classifier(0), _CharTokenizer(), [])


def test_classifier_judge_loads_a_local_folder(tmp_path, chat_tokenizer):
    model = _constant_classifier(1)
    model.resize_token_embeddings(len(chat_tokenizer))
    model.save_pretrained(tmp_path)
    chat_tokenizer.save_pretrained(tmp_path)
    judge = ClassifierJudge.from_pretrained(tmp_path, ["unsafe"], name="local")
    assert judge.name == "local"
    assert judge.judge(["p", "q"], ["Paris is the capital.", "Once upon a time"]) == [False, False]
