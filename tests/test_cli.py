"""The command line: unlearn and generate from a config file, and its error messages."""

import json
import subprocess
import sys

import pytest

from fastunlearn.cli import main
from fastunlearn.data.negatives import read_negatives
from tests.data.conftest import offline_datasets  # noqa: F401 - autouse: datasets stays offline
from tests.engine.conftest import one_thread  # noqa: F401 - autouse: tiny models on one thread
from tests.engine.helpers import HARMFUL, save_tiny_model, write_data, write_jsonl


@pytest.fixture
def run_files(tmp_path):
    data = write_data(tmp_path / "data")
    config = {
        "model": {"name_or_path": str(save_tiny_model(tmp_path / "model"))},
        "data": {
            "forget": {"path": str(data["forget"])},
            "positives": {"path": str(data["refusals"])},
            "num_negatives": 2,
            "batch_size": 2,
            "max_length": 48,
        },
        "generation": {"max_new_tokens": 6, "batch_size": 4},
        "train": {
            "max_steps": 2,
            "learning_rate": 1e-2,
            "disable_tqdm": True,
            "output_dir": str(tmp_path / "run"),
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config))
    return path, tmp_path


def test_unlearn_writes_the_final_model(run_files, capsys):
    config, tmp_path = run_files
    assert (
        main(
            ["unlearn", "--config", str(config), "--set", "train.max_steps=1", "objective.name=ga"]
        )
        == 0
    )
    assert f"unlearned model written to {tmp_path / 'run' / 'final'}" in capsys.readouterr().out
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    # A second run into the same folder is refused unless it resumes; resuming a finished run is
    # a no-op.
    assert (
        main(
            ["unlearn", "--config", str(config), "--set", "train.max_steps=1", "objective.name=ga"]
        )
        == 1
    )
    assert "already holds checkpoints" in capsys.readouterr().err
    assert (
        main(
            [
                "--local_rank=0",
                "unlearn",
                "--config",
                str(config),
                "--set",
                "train.max_steps=1",
                "objective.name=ga",
                "--resume",
            ]
        )
        == 0
    )


def test_generate_then_unlearn_with_the_models_own_negatives(run_files, capsys):
    config, tmp_path = run_files
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": prompt} for prompt, _ in HARMFUL])
    negatives = tmp_path / "negatives.jsonl"
    settings = [
        "--set",
        f"data.forget.path={prompts}",
        "data.forget.format=prompts",
        f"data.negatives={negatives}",
    ]
    assert main(["generate", "--config", str(config), *settings]) == 0
    assert f"written: {negatives}" in capsys.readouterr().out
    sampled = read_negatives(negatives)
    assert list(sampled) == [prompt for prompt, _ in HARMFUL]
    assert main(["unlearn", "--config", str(config), *settings]) == 0
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--set", "trian.max_steps=1"],
            "Key 'trian' not in 'UnlearnConfig'. Did you mean: 'train'?",
        ),
        (
            ["--set", "data.forget.path=/nowhere/pku.jsonl"],
            "data.forget: no such file or folder: /nowhere/pku.jsonl",
        ),
        (
            ["--set", "train.deepspeed=/nowhere/zero2.json"],
            "DeepSpeed config not found: /nowhere/zero2.json",
        ),
    ],
)
def test_bad_input_is_one_clear_line(run_files, capsys, arguments, message):
    config, tmp_path = run_files
    assert main(["unlearn", "--config", str(config), *arguments]) == 1
    error = capsys.readouterr().err.splitlines()[-1]  # after any progress bars
    assert error.startswith("fastunlearn unlearn: error: ") and message in error
    assert not (tmp_path / "run").exists()


def test_usage(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2 and "COMMAND" in capsys.readouterr().err
    assert main(["unlearn", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err


def test_copyright_runs_the_three_stages(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "model")
    text = tmp_path / "text.txt"
    text.write_text(
        " ".join(f"{prompt} {response}" for prompt, response in HARMFUL) * 2, encoding="utf-8"
    )
    output = tmp_path / "copyright.json"
    arguments = [
        "copyright",
        "--model",
        str(model),
        "--retain",
        str(text),
        "--heldout",
        str(text),
        "--implant-steps",
        "2",
        "--unlearn-steps",
        "1",
        "--max-windows",
        "2",
    ]
    assert main([*arguments, "--text", str(text), "--output", str(output)]) == 0
    assert set(json.loads(output.read_text())["stages"]) == {"original", "implanted", "unlearned"}
    short = tmp_path / "short.txt"
    short.write_text("Paris is the capital of France.", encoding="utf-8")
    assert main([*arguments, "--text", str(short)]) == 1
    assert "fewer than one window of 64" in capsys.readouterr().err


@pytest.fixture
def eval_files(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": prompt} for prompt, _ in HARMFUL])
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": response} for _, response in HARMFUL])
    model = save_tiny_model(tmp_path / "model")
    return [
        "--model",
        str(model),
        "--harmful",
        str(prompts),
        "--benign",
        str(prompts),
        "--text",
        str(text),
        "--ood",
        "none",
        "--max-new-tokens",
        "4",
    ]


@pytest.mark.parametrize("judge", [[], ["--judge", "generative"]])
def test_eval_prints_and_writes_the_response_classes(eval_files, tmp_path, capsys, judge):
    output = tmp_path / "result.json"
    judge_model = ["--judge-model", eval_files[1]] if judge else []
    assert main(["eval", *eval_files, *judge, *judge_model, "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(output.read_text())
    assert json.loads(printed)["classes"] == result["classes"]
    assert set(result["classes"]) == {"harmful", "benign"}
    assert all("class" in entry for entries in result["responses"].values() for entry in entries)
    assert result["judge"].startswith("generative" if judge else "rules")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--judge", "generative"], "the generative judge needs a model folder"),
        (
            ["--judge", "classifier", "--judge-model", "/nowhere/classifier"],
            "judge model folder /nowhere/classifier",
        ),
        (["--output", "/nowhere/result.json"], "folder /nowhere does not exist"),
    ],
)
def test_eval_refuses_bad_judges_and_outputs_before_any_work(
    eval_files, capsys, arguments, message
):
    assert main(["eval", *eval_files, *arguments]) == 1
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("fastunlearn eval: error: ") and message in error


def test_a_missing_optional_dependency_names_its_extra():
    # As in a core install (torch only): the command says which extra to install.
    code = (
        "import sys; sys.modules['omegaconf'] = None\n"
        "from fastunlearn.cli import main\n"
        "raise SystemExit(main(['unlearn', '--config', 'fastunlearn:configs/demo.yaml']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        "fastunlearn unlearn: error: needs omegaconf, which the 'train' extra installs: "
        "pip install 'fastunlearn[train]'"
    )


def test_generate_checks_its_destination_before_sampling(run_files, capsys):
    config, tmp_path = run_files
    (tmp_path / "a_file").write_text("")
    destination = tmp_path / "a_file" / "negatives.jsonl"
    assert (
        main(["generate", "--config", str(config), "--set", f"data.negatives={destination}"]) == 1
    )
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        f"fastunlearn generate: error: data.negatives={destination} cannot be written: "
        f"{tmp_path / 'a_file'} is a file, not a folder"
    )
