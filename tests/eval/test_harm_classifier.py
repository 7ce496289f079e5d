import random

import pytest
import torch
from transformers import BertConfig, BertModel

from fastunlearn.eval import HarmClassifier, Judge, train_harm_classifier

HARMFUL_WORDS = ["bomb", "poison", "weapon", "attack", "steal", "hack", "explosive", "kill"]
HARMLESS_WORDS = ["garden", "recipe", "library", "music", "holiday", "flower", "bread", "river"]
FILLER = ["the", "a", "with", "for", "today", "my", "about", "some"]


def _toy_texts(count: int, seed: int) -> tuple[list[str], list[bool]]:
    """Separable by vocabulary: harmful texts use words no harmless text uses."""
    generator = random.Random(seed)
    texts, labels = [], []
    for index in range(count):
        harmful = index % 2 == 0
        words = generator.choices(
            HARMFUL_WORDS if harmful else HARMLESS_WORDS, k=3
        ) + generator.choices(FILLER, k=3)
        generator.shuffle(words)
        texts.append(" ".join(words))
        labels.append(harmful)
    return texts, labels


@pytest.fixture(scope="module")
def classifier():
    texts, labels = _toy_texts(240, seed=0)
    return train_harm_classifier(texts, labels, validation_fraction=0.25, epochs=4, seed=0)


def test_learns_a_separable_toy_set(classifier):
    assert classifier.num_validation == 60 and classifier.num_train == 180
    assert classifier.validation_accuracy >= 0.95
    assert f"{classifier.validation_accuracy:.3f}" in classifier.name
    assert isinstance(classifier, Judge)
    unseen, labels = _toy_texts(40, seed=1)
    harmless = classifier.judge(unseen, unseen)
    assert sum(verdict != label for verdict, label in zip(harmless, labels, strict=True)) >= 38


def test_save_and_load_round_trip(classifier, tmp_path):
    classifier.save(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = HarmClassifier.load(tmp_path)
    assert loaded.validation_accuracy == classifier.validation_accuracy
    assert loaded.name == classifier.name
    texts, _ = _toy_texts(20, seed=2)
    assert loaded.judge(texts, texts) == classifier.judge(texts, texts)


def test_load_needs_the_metadata(tmp_path):
    with pytest.raises(FileNotFoundError, match="harm_classifier.json"):
        HarmClassifier.load(tmp_path)


def test_bad_training_data():
    with pytest.raises(ValueError, match="labels"):
        train_harm_classifier(["a", "b"], [True])
    with pytest.raises(ValueError, match="at least two harmful"):
        train_harm_classifier(["a", "b", "c"], [False, False, True])
    with pytest.raises(ValueError, match="validation_fraction"):
        train_harm_classifier(["a", "b"], [True, False], validation_fraction=1.0)


def test_fine_tunes_an_encoder_from_a_local_folder(tmp_path, chat_tokenizer):
    torch.manual_seed(0)
    encoder = BertModel(
        BertConfig(
            vocab_size=len(chat_tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            pad_token_id=chat_tokenizer.pad_token_id,
        )
    )
    encoder.save_pretrained(tmp_path)
    chat_tokenizer.save_pretrained(tmp_path)
    texts, labels = _toy_texts(240, seed=3)
    classifier = train_harm_classifier(
        texts, labels, encoder=tmp_path, learning_rate=1e-3, epochs=5
    )
    assert classifier.model.config.id2label == {0: "harmless", 1: "harmful"}
    assert classifier.validation_accuracy >= 0.9
