"""Checkpoint folders: atomic publication, pruning, fingerprints, trainable weights."""

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
        checkpoint.RunState(step, {"next_batch": step}, checkpoint.model_fingerprint(model)),
    )
    return checkpoint.publish(staging, final, keep)


def test_a_staging_folder_never_counts_as_a_checkpoint(tmp_path, model):
    staging = checkpoint.staging_path(checkpoint.checkpoint_path(tmp_path, 5))
    staging.mkdir()
    checkpoint.write_state(staging, checkpoint.RunState(5, {}, checkpoint.model_fingerprint(model)))
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
        "checkpoint-10",
        "checkpoint-12",
    ]


def test_a_checkpoint_of_another_model_is_refused(tmp_path, model, tokenizer):
    from tests.engine.helpers import tiny_opt

    folder = write_checkpoint(tmp_path, 1, model)
    assert checkpoint.read_state(folder, model).step == 1
    with pytest.raises(CheckpointMismatchError, match="different model or LoRA setup"):
        checkpoint.read_state(folder, tiny_opt(tokenizer, hidden_size=48))
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        checkpoint.read_state(tmp_path, model)


def test_trainable_weights_round_trip_through_safetensors(tmp_path, model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.model.decoder.layers[0].requires_grad_(False)  # frozen weights are not saved
    checkpoint.save_trainable(tmp_path, model)
    expected = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    checkpoint.load_trainable(tmp_path, model)
    for name, p in model.named_parameters():
        assert torch.equal(p, expected[name] if p.requires_grad else torch.zeros_like(p)), name
