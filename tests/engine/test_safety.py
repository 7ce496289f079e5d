"""What a run refuses: a value that stops being finite (and saving one), a folder another live
run holds, a finished model overwritten, a resume that changed the run, a full disk reported
as a traceback, settings the model cannot serve found after it loaded."""

import errno
import json
import os

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from fastunlearn.engine import CheckpointMismatchError, ConfigError, Unlearner, list_checkpoints
from fastunlearn.engine import checkpoint as checkpoint_module
from fastunlearn.engine.safety import (
    RunLock,
    RunLockedError,
    StorageFullError,
    TrainingDivergedError,
)
from tests.engine.helpers import run_config, tiny_opt, training_rows


def test_a_diverging_run_stops_and_saves_nothing_after_the_last_finite_checkpoint(
    tmp_path, data, model, tokenizer
):
    config = run_config(
        data,
        tmp_path / "run",
        "ga",
        train__max_steps=6,
        train__learning_rate=1e6,
        train__max_grad_norm="null",
        train__warmup_steps=0,
        train__save_steps=1,
        train__save_total_limit="null",
    )
    with pytest.raises(TrainingDivergedError, match=r"training diverged at step (\d)") as error:
        Unlearner(config, model, tokenizer).train()
    assert "lower train.learning_rate" in str(error.value)
    assert not (tmp_path / "run" / "final").exists()
    for folder in list_checkpoints(tmp_path / "run"):
        weights = checkpoint_module.load_file(folder / "trainable.safetensors")
        assert all(tensor.isfinite().all() for tensor in weights.values()), folder.name
    assert all(torch.tensor(row["loss"]).isfinite() for row in training_rows(tmp_path / "run"))


def test_weights_that_are_not_finite_are_never_written(tmp_path, data, model, tokenizer):
    def poison(model, step):  # a finite loss, then a weight that is not
        next(model.parameters()).data[0, 0] = float("nan")

    config = run_config(data, tmp_path / "run", "ga", train__max_steps=2, train__eval_steps=2)
    with pytest.raises(TrainingDivergedError, match="step 2: the trained weights are not finite"):
        Unlearner(config, model, tokenizer, eval_hooks=[poison]).train()
    assert list_checkpoints(tmp_path / "run") == [] and not (tmp_path / "run" / "final").exists()


def test_a_folder_held_by_a_live_run_is_refused_before_loading(tmp_path, data, model, tokenizer):
    config = run_config(data, tmp_path / "run", "ga", train__max_steps=1)
    lock = RunLock(tmp_path / "run").acquire()  # another run, alive
    try:
        with pytest.raises(RunLockedError, match=r"in use by another live run \(.*\"pid\""):
            Unlearner(config, model, tokenizer)
    finally:
        lock.release()
    # Released (as the kernel does when a run dies, SIGKILL included): the folder is free.
    Unlearner(config, model, tokenizer).train()


def test_a_finished_model_is_not_overwritten(tmp_path, data, model, tokenizer):
    # save_total_limit=1 and a checkpoint removed by hand: final/ alone marks the finished run.
    config = run_config(data, tmp_path / "run", "ga", train__max_steps=1)
    final = Unlearner(config, model, tokenizer).train()
    for folder in list_checkpoints(tmp_path / "run"):
        checkpoint_module.shutil.rmtree(folder)
    written = (final / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="final holds the model of a finished run"):
        Unlearner(config, tiny_opt(tokenizer, seed=1), tokenizer).train()
    assert (final / "model.safetensors").read_bytes() == written


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train__learning_rate": 5e-3}, r"train.learning_rate \(0.01 there, 0.005 now\)"),
        ({"objective__name": "npo"}, r"objective.name \('ga' there, 'npo' now\)"),
        ({"data__forget__path": "{other}"}, r"data.forget.path \("),
        ({"train__max_steps": 1}, r"max_steps=1 is below the step .* \(2\)"),
    ],
)
def test_resume_refuses_a_changed_run(tmp_path, data, model, tokenizer, change, message):
    rows = data["forget"].read_text().splitlines()
    (tmp_path / "other.jsonl").write_text("\n".join(rows[1:]) + "\n")  # another forget set
    config = run_config(data, tmp_path / "run", "ga", train__max_steps=2)
    Unlearner(config, model, tokenizer).train()
    change = {
        key: str(value).format(other=tmp_path / "other.jsonl") for key, value in change.items()
    }
    changed = run_config(data, tmp_path / "run", "ga", **{"train__max_steps": 2, **change})
    with pytest.raises(CheckpointMismatchError, match=message):
        Unlearner(changed, tiny_opt(tokenizer), tokenizer).train(resume=True)


def test_resume_refuses_a_data_file_rewritten_in_place(tmp_path, data, model, tokenizer):
    config = run_config(data, tmp_path / "run", "ga", train__max_steps=2)
    Unlearner(config, model, tokenizer).train()
    forget = data["forget"]
    stat = forget.stat()
    rows = [json.loads(line) for line in forget.read_text().splitlines()]
    rows.reverse()  # same size, same rows, another order; the same mtime below
    forget.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.utime(forget, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(CheckpointMismatchError, match="the contents of data.forget.path"):
        Unlearner(config, tiny_opt(tokenizer), tokenizer).train(resume=True)


def test_resume_may_run_longer_and_report_differently(tmp_path, data, model, tokenizer):
    config = run_config(data, tmp_path / "run", "ga", train__max_steps=2)
    Unlearner(config, model, tokenizer).train()
    longer = run_config(
        data,
        tmp_path / "run",
        "ga",
        train__max_steps=3,
        train__logging_steps=2,
        train__eval_steps=3,
    )
    resumed = Unlearner(longer, tiny_opt(tokenizer), tokenizer)
    resumed.train(resume=True)
    assert resumed.trainer.state.global_step == 3


def test_a_full_disk_is_named_and_leaves_the_last_checkpoint(
    tmp_path, data, model, tokenizer, monkeypatch
):
    config = run_config(data, tmp_path / "run", "ga", train__max_steps=2, train__save_steps=1)
    saved = checkpoint_module.save_trainable

    def save_trainable(folder, model):
        if folder.name.startswith(".checkpoint-2"):
            raise OSError(errno.ENOSPC, "No space left on device")
        saved(folder, model)

    monkeypatch.setattr(checkpoint_module, "save_trainable", save_trainable)
    with pytest.raises(StorageFullError, match="no space left on the device while writing"):
        Unlearner(config, model, tokenizer).train()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-1"]
    assert not any(p.name.startswith(".") and p.is_dir() for p in (tmp_path / "run").iterdir())


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path, data, tokenizer):
    small = OPTForCausalLM(
        OPTConfig(
            vocab_size=len(tokenizer) - 3,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
            max_position_embeddings=64,
        )
    )
    config = run_config(data, tmp_path / "run", "ga")
    with pytest.raises(ConfigError, match=r"the tokenizer has \d+ tokens but the model's embed"):
        Unlearner(config, small, tokenizer)
    assert not (tmp_path / "run").exists()


def test_fp16_weights_are_refused_before_training(tmp_path, data, model, tokenizer):
    config = run_config(data, tmp_path / "run", "ga")
    with pytest.raises(ConfigError, match="would train fp16 weights"):
        Unlearner(config, model.half(), tokenizer)
    with pytest.raises(ConfigError, match="would train fp16 weights"):
        Unlearner(run_config(data, tmp_path / "run", "ga", model__dtype="float16"))


def test_a_model_that_is_not_there_is_named_without_reaching_a_hub(tmp_path, data):
    config = run_config(data, tmp_path / "run", "ga", model__name_or_path=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"model '.*nope': no such folder, and not in the"):
        Unlearner(config)
    hub_name = run_config(data, tmp_path / "run", "ga", model__name_or_path="someone/not-cached")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded at run time"):
        Unlearner(hub_name)


def test_an_output_dir_that_cannot_be_written_is_refused_before_loading(
    tmp_path, data, monkeypatch
):
    (tmp_path / "a_file").write_text("")
    config = run_config(data, tmp_path / "a_file" / "run", "ga")
    with pytest.raises(NotADirectoryError, match="a_file is a file, not a folder"):
        Unlearner(config)  # no model given: it would load one after the check
    # A read-only folder (root writes anyway, so the permission answer is what is checked).
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(PermissionError, match=r"train.output_dir=.* cannot be written: .* not"):
        Unlearner(run_config(data, tmp_path / "run", "ga"))
    assert not (tmp_path / "run").exists()
