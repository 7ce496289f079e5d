"""UnlearnTrainer used directly, as a transformers.Trainer: an objective module, a sampler and
UnlearnTrainingArguments, no run config."""

import json

import pytest
import torch

from fastunlearn.data.batches import BatchSampler, SequenceSource, padding_id
from fastunlearn.data.tokenization import tokenize_pairs
from fastunlearn.engine import (
    CheckpointMismatchError,
    ObjectiveModule,
    UnlearnTrainer,
    UnlearnTrainingArguments,
)
from fastunlearn.objectives import GradientAscent, Term, WeightedSum
from tests.engine.helpers import HARMFUL, tiny_opt


def build(tmp_path, tokenizer, model, **arguments):
    pairs = tokenize_pairs(tokenizer, HARMFUL, max_length=48, source="forget")
    batches = BatchSampler(SequenceSource(pairs, padding_id(tokenizer), "forget"), batch_size=2)
    objective = WeightedSum([Term("ga", GradientAscent(), 1.0, "forget")])
    settings = {"max_steps": 4, "learning_rate": 1e-2, "save_steps": 2, "logging_steps": 1}
    args = UnlearnTrainingArguments(
        output_dir=str(tmp_path / "run"),
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        **{**settings, **arguments},
    )
    return UnlearnTrainer(ObjectiveModule(model, objective), args, batches)


def test_trains_logs_each_term_and_writes_whole_checkpoints(tmp_path, tokenizer, model):
    before = [p.detach().clone() for p in model.parameters()]
    build(tmp_path, tokenizer, model).train()
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    steps = [row for row in rows if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2, 3, 4]
    assert all({"ga", "ga/nll", "learning_rate", "grad_norm"} <= row.keys() for row in steps)
    assert all(row["loss"] == pytest.approx(row["ga"]) for row in steps)  # its only term
    folders = sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir())
    assert folders == ["checkpoint-2", "checkpoint-4"]  # none left under a staging name
    assert {p.name for p in (tmp_path / "run" / "checkpoint-4").iterdir()} >= {
        "trainable.safetensors",
        "run_state.json",
        "trainer_state.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
    }
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "run_state.json").read_text())
    assert state["step"] == 4 and state["sampler"] == {"next_batch": 4}


def test_resuming_continues_the_stream_and_refuses_another_model(tmp_path, tokenizer):
    build(tmp_path, tokenizer, tiny_opt(tokenizer), max_steps=2).train()
    longer = build(tmp_path, tokenizer, tiny_opt(tokenizer))
    longer.train(resume_from_checkpoint=True)
    assert longer.state.global_step == 4 and longer.batches.next_batch == 4
    other = build(tmp_path, tokenizer, tiny_opt(tokenizer, hidden_size=48))
    with pytest.raises(CheckpointMismatchError, match="different model or LoRA setup"):
        other.train(resume_from_checkpoint=True)
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        build(tmp_path, tokenizer, tiny_opt(tokenizer)).train()
