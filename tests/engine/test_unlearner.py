"""The Unlearner on one process: every objective end to end, export, hooks, bad input."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from fastunlearn.engine import CheckpointMismatchError, ConfigError, Unlearner, latest_checkpoint
from tests.engine.helpers import run_config, tiny_opt, training_rows, write_jsonl


@pytest.mark.parametrize(
    ("objective", "overrides", "terms"),
    [
        ("wpn", {}, ["wpn", "wpn/accuracy"]),
        ("ga", {"objective__retain": "kl"}, ["ga", "ga/nll", "retain_kl"]),
        ("ga_mismatch_kl", {"train__gradient_accumulation_steps": 2}, ["ga", "mismatch", "kl"]),
        ("npo", {"objective__retain": "nll"}, ["npo", "retain_nll"]),
        ("rr", {"objective__layers": "[1,-1]"}, ["reroute", "reroute/cos", "hold"]),
    ],
)
def test_each_objective_trains_and_exports_a_loadable_model(
    tmp_path, data, model, tokenizer, objective, overrides, terms
):
    config = run_config(data, tmp_path / "run", objective, train__max_steps=2, **overrides)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    final = Unlearner(config, model, tokenizer).train()
    rows = training_rows(tmp_path / "run")
    assert [row["step"] for row in rows] == [1, 2]
    assert all(term in rows[0] for term in ["loss", "learning_rate", "grad_norm", *terms])
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-2"
    reloaded = AutoModelForCausalLM.from_pretrained(final)
    for name, parameter in reloaded.named_parameters():
        assert torch.equal(parameter, dict(model.named_parameters())[name].cpu()), name
    assert any(not torch.equal(p.cpu(), before[n].cpu()) for n, p in model.named_parameters())
    assert reloaded.generation_config is not None and (final / "tokenizer.json").is_file()


@pytest.mark.parametrize("objective", ["ga_mismatch_kl", "npo"])
def test_mixed_precision_on_plain_torch(tmp_path, data, model, tokenizer, objective):
    """OPT's hidden states come out of autocast in bf16 while its tied head stays fp32."""
    config = run_config(data, tmp_path / "run", objective, train__max_steps=2, train__bf16=True)
    Unlearner(config, model, tokenizer).train()
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in training_rows(tmp_path / "run"))


def test_lora_merged_and_adapter_exports(tmp_path, data, tokenizer):
    inputs = tokenizer(["Tell me a story about a dragon."], return_tensors="pt")
    merged_config = run_config(
        data, tmp_path / "merged", "wpn", lora__enabled=True, lora__dropout=0.0, train__max_steps=2
    )
    merged = Unlearner(merged_config, tiny_opt(tokenizer), tokenizer)
    merged_final = merged.train()
    # The run moved the model to the GPU where there is one; the reloaded copies stay on the CPU.
    on_device = {name: tensor.to(merged.model.device) for name, tensor in inputs.items()}
    expected = merged.model(**on_device).logits.cpu()
    assert torch.allclose(
        AutoModelForCausalLM.from_pretrained(merged_final)(**inputs).logits, expected, atol=1e-5
    )

    adapter_config = run_config(
        data,
        tmp_path / "adapter",
        "wpn",
        lora__enabled=True,
        lora__dropout=0.0,
        lora__export="adapter",
        train__max_steps=2,
    )
    adapter_final = Unlearner(adapter_config, tiny_opt(tokenizer), tokenizer).train()
    assert (adapter_final / "adapter_model.safetensors").is_file()
    # Same seed and data: the adapter on a fresh base gives what the merged model gives.
    with_adapter = PeftModel.from_pretrained(tiny_opt(tokenizer), adapter_final)
    assert torch.allclose(with_adapter(**inputs).logits, expected, atol=1e-5)


def test_gradient_ascent_stops_when_the_forget_nll_passes_the_bound(
    tmp_path, data, model, tokenizer
):
    config = run_config(
        data, tmp_path / "run", "ga", train__max_steps=5, train__stop_forget_nll_above=1.0
    )
    unlearner = Unlearner(config, model, tokenizer)
    final = unlearner.train()
    assert unlearner.trainer.state.global_step == 1 and final.is_dir()
    assert [row["step"] for row in training_rows(tmp_path / "run")] == [1]
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-1"


def test_eval_hooks_run_every_eval_steps_steps(tmp_path, data, model, tokenizer):
    calls = []

    def count_parameters(model, step):
        calls.append(step)
        return {"parameters": float(sum(p.numel() for p in model.parameters()))}

    config = run_config(data, tmp_path / "run", "ga", train__max_steps=4, train__eval_steps=2)
    Unlearner(config, model, tokenizer, eval_hooks=[count_parameters]).train()
    assert calls == [2, 4]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    evaluations = [row for row in map(json.loads, lines) if "eval_parameters" in row]
    assert [row["step"] for row in evaluations] == [2, 4]


def test_checkpoints_are_kept_and_an_existing_run_is_not_overwritten(
    tmp_path, data, model, tokenizer
):
    config = run_config(
        data,
        tmp_path / "run",
        "ga",
        train__max_steps=4,
        train__save_steps=1,
        train__save_total_limit=2,
    )
    Unlearner(config, model, tokenizer).train()
    # tensorboard/ holds event files where the tensorboard package is installed.
    # .lock: the run lock's file (the lock itself went with the run).
    found = (tmp_path / "run").iterdir()
    assert sorted(p.name for p in found if p.name not in ("tensorboard", ".lock")) == [
        "checkpoint-3",
        "checkpoint-4",
        "final",
        "metrics.jsonl",
    ]
    with pytest.raises(FileExistsError, match="already holds checkpoints.*resume"):
        Unlearner(config, tiny_opt(tokenizer), tokenizer).train()
    fresh = run_config(data, tmp_path / "fresh", "ga")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Unlearner(fresh, tiny_opt(tokenizer), tokenizer).train(resume=True)


def test_a_checkpoint_of_a_different_model_is_refused(tmp_path, data, model, tokenizer):
    config = run_config(data, tmp_path / "run", "ga", train__max_steps=1)
    Unlearner(config, model, tokenizer).train()
    final_weights = load_file(tmp_path / "run" / "final" / "model.safetensors")
    other = tiny_opt(tokenizer, hidden_size=48)
    with pytest.raises(CheckpointMismatchError, match="different model or LoRA setup"):
        Unlearner(config, other, tokenizer).train(resume=True)
    with pytest.raises(CheckpointMismatchError):  # adapters where the checkpoint has a full model
        Unlearner(
            run_config(data, tmp_path / "run", "ga", lora__enabled=True),
            tiny_opt(tokenizer),
            tokenizer,
        ).train(resume=True)
    assert (
        load_file(tmp_path / "run" / "final" / "model.safetensors").keys() == final_weights.keys()
    )


def test_deterministic_mode_is_restored_after_training(tmp_path, data, model, tokenizer):
    config = run_config(
        data, tmp_path / "run", "ga", train__max_steps=1, train__full_determinism=True
    )
    Unlearner(config, model, tokenizer).train()
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize(
    ("key", "value", "error", "message"),
    [
        (
            "data.forget.path",
            "{tmp}/missing.jsonl",
            FileNotFoundError,
            r"data.forget: no such file or folder: .*missing",
        ),
        (
            "data.forget.path",
            "{tmp}/wrong_columns.jsonl",
            ValueError,
            r"expected columns \['prompt', 'response_0', .*found \['question', 'answer'\]",
        ),
        (
            "data.retain.path",
            "{tmp}/empty.jsonl",
            ValueError,
            r"data.retain: .*empty.jsonl is empty",
        ),
        (
            "data.forget.format",
            "prompts",
            ValueError,
            "have no negative response.*fastunlearn generate",
        ),
        ("objective.layer", "7", ConfigError, r"objective.layer=7 is beyond the model's 2 layers"),
        ("train.optim", "adamw_torchh", ConfigError, r"train: adamw_torchh is not a valid"),
        ("train.report_to", "[tensorbaord]", ConfigError, "train.report_to: tensorbaord is not"),
        ("data.max_length", "500", ConfigError, r"data.max_length=500 is beyond .* 128 tokens"),
        (
            "train.deepspeed",
            "{tmp}/contradicting.json",
            ConfigError,
            r"contradicts the run config:\n  train_micro_batch_size_per_gpu = 8 there, "
            r"but data.batch_size gives 2",
        ),
    ],
)
def test_bad_input_fails_with_a_clear_message_before_any_output(
    tmp_path, data, model, tokenizer, key, value, error, message
):
    write_jsonl(tmp_path / "wrong_columns.jsonl", [{"question": "q", "answer": "a"}])
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "contradicting.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": 8}))
    config = run_config(
        data,
        tmp_path / "run",
        "wpn",
        objective__retain="nll",
        **{key.replace(".", "__"): value.format(tmp=tmp_path)},
    )
    with pytest.raises(error, match=message):
        Unlearner(config, model, tokenizer).train()
    assert not (tmp_path / "run").exists()


def test_report_to_tensorboard_writes_the_logged_values(tmp_path, data, model, tokenizer):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = run_config(
        data, tmp_path / "run", "ga", train__max_steps=2, train__report_to="[tensorboard]"
    )
    Unlearner(config, model, tokenizer).train()
    (events,) = {path.parent for path in (tmp_path / "run").rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    logged = {row["step"]: row["ga/nll"] for row in training_rows(tmp_path / "run")}
    written = {event.step: event.value for event in accumulator.Scalars("train/ga/nll")}
    assert written.keys() == logged.keys() == {1, 2}
    assert all(abs(written[step] - logged[step]) < 1e-6 for step in logged)


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_trains_the_same_weights(tmp_path, data, tokenizer, lora):
    finals = {}
    for checkpointing in (False, True):
        config = run_config(
            data,
            tmp_path / f"checkpointing-{checkpointing}",
            "wpn",
            train__max_steps=2,
            train__activation_checkpointing=checkpointing,
            lora__enabled=lora,
            lora__dropout=0.0,
        )
        unlearner = Unlearner(config, tiny_opt(tokenizer), tokenizer)
        final = unlearner.train()
        assert unlearner.trainer.model.model.is_activation_checkpointing == checkpointing
        finals[checkpointing] = load_file(final / "model.safetensors")
    for name, tensor in finals[False].items():
        torch.testing.assert_close(finals[True][name], tensor, rtol=0, atol=1e-6, msg=name)


def test_report_to_wandb_offline_records_the_run(tmp_path, data, model, tokenizer, monkeypatch):
    import wandb

    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": tmp_path,
        "WANDB_SILENT": "true",
    }.items():
        monkeypatch.setenv(name, str(value))
    config = run_config(
        data, tmp_path / "run", "ga", train__max_steps=2, train__report_to="[wandb]"
    )
    Unlearner(config, model, tokenizer).train()
    wandb.finish()  # as at the exit of a `fastunlearn unlearn` process: the run is written out
    (run,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"train/ga/nll" in run.read_bytes()  # the run's history holds each term
