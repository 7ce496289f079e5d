"""A harm classifier the library trains itself, the judge of Gundavarapu et al. 2024
(docs/evaluation.md).

An encoder with a two-way head (0 = harmless, 1 = harmful) is fine-tuned on labelled
(text, harmful) data. A stratified share of the data is held out, and the accuracy on it
is reported with the classifier (in its judge name, and saved with it): a judge is only
as trustworthy as that number. With no encoder path, a tiny BERT-style encoder is built
from a config with a WordPiece vocabulary learnt from the training texts: enough for
clearly separable data and for tests; pass a local pretrained encoder for real use.
Saved as safetensors weights, the tokenizer and harm_classifier.json.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from fastunlearn.eval.judges import ClassifierJudge

LABELS = {0: "harmless", 1: "harmful"}
METADATA_FILE = "harm_classifier.json"
# Built-from-config encoder: small enough to train on CPU in seconds.
TINY_ENCODER = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
}
TINY_VOCAB_SIZE = 2000
# From scratch needs a far larger step than fine-tuning a pretrained encoder.
DEFAULT_LEARNING_RATE = {"from_config": 1e-3, "pretrained": 3e-5}


class HarmClassifier(ClassifierJudge):
    """A trained harm classifier, usable as a judge, with its validation accuracy."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        validation_accuracy: float,
        num_train: int,
        num_validation: int,
        **judge_options,
    ):
        self.validation_accuracy = validation_accuracy
        self.num_train, self.num_validation = num_train, num_validation
        name = (
            f"harm-classifier (validation accuracy {validation_accuracy:.3f} on {num_validation})"
        )
        super().__init__(model, tokenizer, harmful_labels=[LABELS[1]], name=name, **judge_options)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        metadata = {
            "validation_accuracy": self.validation_accuracy,
            "num_train": self.num_train,
            "num_validation": self.num_validation,
        }
        (directory / METADATA_FILE).write_text(
            json.dumps(metadata, indent=2) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: str | Path, **judge_options) -> HarmClassifier:
        directory = Path(directory)
        metadata_path = directory / METADATA_FILE
        if not metadata_path.is_file():
            raise FileNotFoundError(
                f"{directory} holds no {METADATA_FILE}: not a saved HarmClassifier"
            )
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        model = AutoModelForSequenceClassification.from_pretrained(
            directory, local_files_only=True, use_safetensors=True
        )
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        return cls(model, tokenizer, **metadata, **judge_options)


def train_harm_classifier(
    texts: Sequence[str],
    harmful: Sequence[bool],
    *,
    encoder: str | Path | None = None,
    validation_fraction: float = 0.2,
    epochs: int = 5,
    learning_rate: float | None = None,
    batch_size: int = 16,
    max_length: int = 128,
    seed: int = 0,
) -> HarmClassifier:
    """Fine-tune a harm classifier on texts labelled harmful (True) or harmless (False).

    encoder: a local folder with a pretrained encoder and its tokenizer (a new two-way head
    is put on it), or None for the tiny encoder built from a config. learning_rate defaults
    to 1e-3 for the tiny encoder, 3e-5 for a pretrained one. The validation split is
    stratified: validation_fraction of each label, at least one example of each.
    """
    if len(texts) != len(harmful):
        raise ValueError(f"{len(texts)} texts but {len(harmful)} labels")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    train, validation = _stratified_split(
        list(zip(texts, map(bool, harmful), strict=True)), validation_fraction, seed
    )
    torch.manual_seed(seed)
    if encoder is None:
        tokenizer = _train_wordpiece_tokenizer([text for text, _ in train])
        config = BertConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=max_length,
            pad_token_id=tokenizer.pad_token_id,
            num_labels=2,
            id2label=LABELS,
            label2id={name: i for i, name in LABELS.items()},
            **TINY_ENCODER,
        )
        model = AutoModelForSequenceClassification.from_config(config)
        learning_rate = learning_rate or DEFAULT_LEARNING_RATE["from_config"]
    else:
        tokenizer = AutoTokenizer.from_pretrained(encoder, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            encoder,
            local_files_only=True,
            num_labels=2,
            id2label=LABELS,
            label2id={name: i for i, name in LABELS.items()},
        )
        learning_rate = learning_rate or DEFAULT_LEARNING_RATE["pretrained"]

    examples = [
        {**tokenizer(text, truncation=True, max_length=max_length), "labels": int(label)}
        for text, label in train
    ]
    with tempfile.TemporaryDirectory() as scratch:  # the Trainer's output folder: no files kept
        args = TrainingArguments(
            output_dir=scratch,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            lr_scheduler_type="constant",
            optim="adamw_torch",
            weight_decay=0.01,
            max_grad_norm=0.0,
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            seed=seed,
        )
        collator = DataCollatorWithPadding(tokenizer)
        Trainer(model=model, args=args, train_dataset=examples, data_collator=collator).train()
    model.eval()

    validation_judge = ClassifierJudge(
        model, tokenizer, [LABELS[1]], batch_size=batch_size, max_length=max_length
    )
    validation_texts = [text for text, _ in validation]
    # The judge classifies responses alone: the texts stand in for both arguments.
    harmless = validation_judge.judge(validation_texts, validation_texts)
    correct = sum(
        verdict != label for verdict, (_, label) in zip(harmless, validation, strict=True)
    )
    return HarmClassifier(
        model,
        tokenizer,
        validation_accuracy=correct / len(validation),
        num_train=len(train),
        num_validation=len(validation),
        batch_size=batch_size,
        max_length=max_length,
    )


def _stratified_split(
    examples: list[tuple[str, bool]], validation_fraction: float, seed: int
) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """(train, validation) with validation_fraction of each label held out."""
    shuffler = random.Random(seed)
    train, validation = [], []
    for label in (False, True):
        group = [example for example in examples if example[1] == label]
        if len(group) < 2:
            raise ValueError(
                f"need at least two {LABELS[int(label)]} examples (one to train on, one to "
                f"validate on), got {len(group)}"
            )
        shuffler.shuffle(group)
        held_out = min(max(1, round(len(group) * validation_fraction)), len(group) - 1)
        validation += group[:held_out]
        train += group[held_out:]
    return train, validation


def _train_wordpiece_tokenizer(texts: Sequence[str]) -> PreTrainedTokenizerFast:
    """A lower-cased BERT-style WordPiece tokenizer learnt from texts: [CLS] text [SEP]."""
    special = {
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    backend = Tokenizer(models.WordPiece(unk_token=special["unk_token"]))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(
        texts,
        trainers.WordPieceTrainer(
            vocab_size=TINY_VOCAB_SIZE, special_tokens=list(special.values()), show_progress=False
        ),
    )
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)
