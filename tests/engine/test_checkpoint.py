"""Checkpoint folders: atomic publication, pruning, fingerprints, RNG round trip."""

import random

import numpy as np
import pytest
import torch

from fastunlearn.engine import (
    CheckpointMismatchError,
    checkpoint,
    latest_checkpoint,
    list_checkpoints,
)


def write_checkpoint(output_dir, step, model, keep=0):
    final = checkpoint.checkpoint_path(output_dir, step)
    staging = checkpoint.staging_path(final)
    staging.mkdir(parents=True)
    checkpoint.write_state(
        staging,
        checkpoint.TrainerState(step, {"next_batch": step}, checkpoint.model_fingerprint(model)),
    )
    return checkpoint.publish(staging, final, keep)


def test_a_staging_folder_never_counts_as_a_checkpoint(tmp_path, model):
    staging = checkpoint.staging_path(checkpoint.checkpoint_path(tmp_path, 5))
    staging.mkdir()
    checkpoint.write_state(
        staging, checkpoint.TrainerState(5, {}, checkpoint.model_fingerprint(model))
    )
    (tmp_path / "checkpoint-notes").mkdir()  # nor does anything else named like one
    assert list_checkpoints(tmp_path) == [] and latest_checkpoint(tmp_path) is None
    published = write_checkpoint(tmp_path, 3, model)
    assert (
        latest_checkpoint(tmp_path) == published and not checkpoint.staging_path(published).exists()
    )


def test_publish_keeps_the_newest_and_orders_by_step(tmp_path, model):
    for step in (8, 10, 9, 12):
        write_checkpoint(tmp_path, step, model, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint-0000010",
        "checkpoint-0000012",
    ]


def test_a_checkpoint_of_another_model_is_refused(tmp_path, model, tokenizer):
    from tests.engine.helpers import tiny_opt

    folder = write_checkpoint(tmp_path, 1, model)
    assert checkpoint.read_state(folder, model).step == 1
    with pytest.raises(CheckpointMismatchError, match="different model or LoRA setup"):
        checkpoint.read_state(folder, tiny_opt(tokenizer, hidden_size=48))
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        checkpoint.read_state(tmp_path, model)


def test_rng_states_round_trip(tmp_path):
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    checkpoint.save_rng(tmp_path, rank=0)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    checkpoint.load_rng(tmp_path, rank=0)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]


def test_trainable_state_round_trips_through_safetensors(tmp_path, model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    model(torch.tensor([[3, 4, 5]])).logits.sum().backward()
    optimizer.step(), scheduler.step()
    checkpoint.save_trainable(tmp_path, model, optimizer, scheduler)
    expected = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh, lambda step: 1.0 / (1 + step))
    checkpoint.load_trainable(tmp_path, model, fresh, fresh_scheduler)
    for name, p in model.named_parameters():
        assert torch.equal(p, expected[name]), name
    assert fresh.state_dict()["state"][0]["step"] == 1 and fresh_scheduler.last_epoch == 1
