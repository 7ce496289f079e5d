"""`fastunlearn unlearn` under torchrun and `accelerate launch` (DDP over gloo, and DeepSpeed
ZeRO-3 through accelerate's DeepSpeed launcher): two CPU processes end with the weights of one
process accumulating both processes' micro-batches."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fastunlearn.engine import UnlearnConfig, Unlearner
from fastunlearn.engine.distributed import free_port
from tests.engine.helpers import run_settings, save_tiny_model, training_rows

ROOT = Path(__file__).resolve().parents[2]
WORLD_SIZE = 2


def settings(model_dir, data, output_dir) -> list[str]:
    return run_settings(
        data, output_dir, "wpn", objective__retain="nll", model__name_or_path=model_dir
    )


LAUNCHERS = {
    "torchrun": lambda port: [
        *(sys.executable, "-m", "torch.distributed.run"),
        *("--nproc_per_node", str(WORLD_SIZE), "--master_port", str(port)),
        *("-m", "fastunlearn"),
    ],
    "accelerate": lambda port: [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        # --multi_gpu: DDP; on a machine without GPUs, over gloo on the CPU.
        *("--multi_gpu", "--num_processes", str(WORLD_SIZE), "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)),
        *("-m", "fastunlearn"),
    ],
    "accelerate-deepspeed": lambda port: [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--use_deepspeed", "--num_processes", str(WORLD_SIZE), "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)),
        *("-m", "fastunlearn"),
    ],
}
# The DeepSpeed config goes through the run config (docs/models.md): the engine must know.
EXTRA_SETTINGS = {
    "accelerate-deepspeed": ["train.deepspeed=fastunlearn:configs/deepspeed/zero3.json"]
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from tests.engine.helpers import write_data

    root = tmp_path_factory.mktemp("launchers")
    return root, save_tiny_model(root / "model"), write_data(root / "data")


@pytest.fixture(scope="module")
def single_process(files):
    torch.set_num_threads(1)  # as the launched processes (module scope runs before one_thread)
    root, model_dir, data = files
    config = UnlearnConfig.load(
        None,
        [
            *settings(model_dir, data, root / "single"),
            f"train.gradient_accumulation_steps={WORLD_SIZE}",
        ],
    )
    return Unlearner(config).train()


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_processes_match_one(files, single_process, launcher):
    if "deepspeed" in launcher:
        pytest.importorskip("deepspeed", reason="pip install -e .[deepspeed]")
    root, model_dir, data = files
    output_dir = root / launcher
    defaults = root / "defaults.yaml"
    defaults.write_text("{}\n")  # every setting comes from --set
    command = [
        *LAUNCHERS[launcher](free_port()),
        *("unlearn", "--config", str(defaults), "--set"),
        *settings(model_dir, data, output_dir),
        *EXTRA_SETTINGS.get(launcher, []),
    ]
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    job = subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]

    losses = [row["loss"] for row in training_rows(output_dir)]
    expected = [row["loss"] for row in training_rows(root / "single")]
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-6)
    weights = load_file(output_dir / "final" / "model.safetensors")
    reference = load_file(single_process / "model.safetensors")
    assert weights.keys() == reference.keys()
    difference = max((weights[name] - reference[name]).abs().max().item() for name in weights)
    print(f"{launcher}: max |2 processes - 1 process| over final weights = {difference:.2e}")
    assert difference <= 1e-5
