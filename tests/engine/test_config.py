"""UnlearnConfig from YAML and overrides; the DeepSpeed config filled from it."""

import json
from pathlib import Path

import pytest

from fastunlearn.engine import ConfigError, UnlearnConfig
from fastunlearn.engine.distributed import fill_hidden_size_keys, resolve_deepspeed_config

CONFIGS = Path(__file__).resolve().parents[2] / "fastunlearn" / "configs"


def test_yaml_then_overrides_with_types_converted(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  max_steps: 7\n  learning_rate: 1e-4\nlora:\n  enabled: true\n")
    config = UnlearnConfig.load(
        path, ["train.max_steps=9", "lora.target_modules=[q_proj,v_proj]", "objective.layer=-2"]
    )
    assert (
        config.train.max_steps == 9 and config.train.learning_rate == 1e-4
    )  # YAML's "1e-4" is a float here
    assert config.lora.enabled and config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.objective.layer == -2 and config.train.seed == 0  # untouched defaults stay


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trian.max_steps=3", "Key 'trian' not in 'UnlearnConfig'. Did you mean: 'train'?"),
        ("train.learning_rat=1e-3", "Did you mean: 'learning_rate'?"),
        ("train.max_steps=many", "Value 'many' of type 'str' could not be converted to Integer"),
        (
            "objective.name=sgd",
            r"objective.name must be one of "
            r"\['wpn', 'ga', 'ga_mismatch_kl', 'npo', 'rr'\], got 'sgd'",
        ),
        ("train.max_steps", "must look like key=value"),
        (
            "evaluation.judge=oracle",
            r"evaluation.judge must be one of \['rules', 'generative', 'classifier'\]",
        ),
        ("evaluation.judge=generative", "evaluation.judge=generative needs evaluation.judge_model"),
        ("evaluation.judge_template=t.txt", "judge_template is read by the generative judge only"),
        ("evaluation.prompts_per_set=0", "evaluation.prompts_per_set must be positive"),
    ],
)
def test_bad_overrides_are_refused_with_a_reason(override, message):
    with pytest.raises(ConfigError, match=message):
        UnlearnConfig.load(None, [override])


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  batchsize: 4\n")
    with pytest.raises(ConfigError, match=rf"{path}.*Did you mean one of: 'batch_size'"):
        UnlearnConfig.load(path)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        UnlearnConfig.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "name",
    [
        "wpn_lora.yaml",
        "ga_mismatch_kl.yaml",
        "npo.yaml",
        "rr_lora.yaml",
        "demo.yaml",
    ],
)
def test_shipped_configs_load(name):
    config = UnlearnConfig.load(CONFIGS / name)
    assert config.objective.name in name or name == "demo.yaml"


def test_deepspeed_auto_values_come_from_the_run_config():
    config = UnlearnConfig.load(
        None,
        [
            "data.batch_size=3",
            "train.gradient_accumulation_steps=2",
            "train.bf16=true",
            "train.max_grad_norm=0.5",
        ],
    )
    raw = json.loads((CONFIGS / "deepspeed" / "zero3.json").read_text())
    resolved = resolve_deepspeed_config(raw, config, world_size=4)
    assert (
        resolved["train_micro_batch_size_per_gpu"] == 3
        and resolved["gradient_accumulation_steps"] == 2
    )
    # Checked (below), then left for DeepSpeed to derive from the micro-batch and world size.
    assert "train_batch_size" not in resolved and resolved["gradient_clipping"] == 0.5
    assert resolved["bf16"]["enabled"] is True and resolved["fp16"]["enabled"] is False
    fill_hidden_size_keys(resolved, 64)
    assert resolved["zero_optimization"]["stage3_param_persistence_threshold"] == 640
    assert raw["train_micro_batch_size_per_gpu"] == "auto"  # the file's dict is left as it was


def test_deepspeed_values_that_contradict_the_run_config_are_listed():
    config = UnlearnConfig.load(None, ["data.batch_size=2", "train.gradient_accumulation_steps=1"])
    raw = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1,
        "train_batch_size": 7,
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": 2},
    }
    with pytest.raises(ConfigError) as error:
        resolve_deepspeed_config(raw, config, world_size=1, source="ds.json")
    message = str(error.value)
    assert "ds.json contradicts the run config" in message
    assert "train_micro_batch_size_per_gpu = 4 there, but data.batch_size gives 2" in message
    assert "bf16.enabled = True there, but train.bf16 gives False" in message
    assert "train_batch_size = 7 there" in message
    assert "gradient_accumulation_steps =" not in message  # it agrees
    with pytest.raises(ConfigError, match="remove its 'optimizer' section"):
        resolve_deepspeed_config({"optimizer": {"type": "Adam"}}, config, world_size=1)


def test_yaml_syntax_errors_name_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  max_steps: 3\n  output_dir: [runs\n")
    with pytest.raises(ConfigError, match=rf"{path}:4:1: not valid YAML \(did not find"):
        UnlearnConfig.load(path)


@pytest.mark.parametrize(
    "override", ["train.learning_rate=inf", "objective.retain_weight=nan", "train.adam_beta1=-inf"]
)
def test_numbers_that_are_not_finite_are_refused(override):
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]} must be finite"):
        UnlearnConfig.load(None, [override])
