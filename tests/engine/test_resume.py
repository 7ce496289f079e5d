"""A run killed mid-way and resumed ends with the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from fastunlearn.engine import UnlearnConfig, Unlearner, list_checkpoints
from tests.engine.helpers import save_tiny_model, training_rows

ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = 40


def write_config(folder: Path, data: dict, model_dir: Path) -> Path:
    # LoRA dropout draws random numbers every step: the RNG state must resume exactly too.
    config = {
        "model": {"name_or_path": str(model_dir)},
        "lora": {"enabled": True, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "fc1"]},
        "data": {
            "forget": {"path": str(data["forget"])},
            "positives": {"path": str(data["refusals"])},
            "retain": {"path": str(data["normal"])},
            "num_negatives": 2,
            "batch_size": 2,
            "max_length": 48,
        },
        "objective": {"name": "wpn", "retain": "kl"},
        "train": {
            "max_steps": MAX_STEPS,
            "learning_rate": 1e-2,
            "warmup_steps": 2,
            "save_steps": 2,
            "gradient_accumulation_steps": 2,
            "full_determinism": True,
            "disable_tqdm": True,
            "seed": 5,
        },
    }
    path = folder / "run.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def cli(config_path: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fastunlearn",
        "unlearn",
        "--config",
        str(config_path),
        "--set",
        f"train.output_dir={output_dir}",
        *extra,
    ]


def test_a_killed_run_resumes_exactly(tmp_path, data):
    model_dir = save_tiny_model(tmp_path / "model")
    config_path = write_config(tmp_path, data, model_dir)
    killed = tmp_path / "killed"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    process = subprocess.Popen(
        cli(config_path, killed),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not list_checkpoints(killed):
        assert process.poll() is None, (
            f"the run ended before it could be killed:\n{process.stderr.read()}"
        )
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = int(list_checkpoints(killed)[-1].name.split("-")[1])
    assert stopped_at < MAX_STEPS and not (killed / "final").exists()

    resumed = subprocess.run(
        cli(config_path, killed, "--resume"),
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    steps = [row["step"] for row in training_rows(killed)]
    assert steps == list(range(1, MAX_STEPS + 1))  # rows logged after the checkpoint were dropped

    config = UnlearnConfig.load(config_path, [f"train.output_dir={tmp_path / 'uninterrupted'}"])
    expected = load_file(Unlearner(config).train() / "model.safetensors")
    weights = load_file(killed / "final" / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name
