"""`import fastunlearn` and the command line's --help stay light: torch, transformers and
the rest load when a command or an op first needs them."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "datasets", "rouge_score", "matplotlib", "deepspeed")


def loaded_heavy_modules(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return eval(result.stdout.strip().splitlines()[-1])  # a printed list of names


@pytest.mark.parametrize(
    "code",
    [
        "import fastunlearn",
        "import fastunlearn.engine, fastunlearn.recipes",
        "from fastunlearn.cli import build_parser; build_parser()",
        "import fastunlearn.engine as e; e.UnlearnConfig.load('fastunlearn:configs/demo.yaml')",
    ],
)
def test_no_heavy_import_before_it_is_needed(code):
    assert loaded_heavy_modules(code) == []


def test_help_prints_every_command():
    for argv in ([], ["demo"], ["copyright"]):
        result = subprocess.run(
            [sys.executable, "-m", "fastunlearn", *argv, "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "usage: fastunlearn" in result.stdout


def test_lazy_names_resolve_on_first_use():
    import fastunlearn
    import fastunlearn.engine
    from fastunlearn.ops import linear_nll

    assert fastunlearn.linear_nll is linear_nll
    assert "Unlearner" in dir(fastunlearn.engine) and "linear_nll" in dir(fastunlearn)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        fastunlearn.engine.nope  # noqa: B018
    assert fastunlearn.__version__.count(".") == 2
