"""The demo data shipped with the package (fastunlearn/demo_data, see its README.md) and the
evaluation suite built from its held-out files."""

from __future__ import annotations

from pathlib import Path

from fastunlearn.data import read_corpus, read_prompts
from fastunlearn.eval.report import EvalSuite

DEMO_DATA_DIR = Path(__file__).resolve().parent.parent / "demo_data"


def demo_data_path(name: str) -> Path:
    """Path of a demo data file, e.g. "harmful_train.jsonl"."""
    path = DEMO_DATA_DIR / name
    if not path.is_file():
        available = sorted(p.name for p in DEMO_DATA_DIR.iterdir() if p.name != "README.md")
        raise FileNotFoundError(f"no demo data file {name!r}; available: {available}")
    return path


def demo_suite(**settings) -> EvalSuite:
    """The held-out demo sets: harmful_eval, benign_eval, normal_text_eval and harmful_ood.
    Keyword arguments set the other EvalSuite fields (judge, max_new_tokens, ...)."""
    return EvalSuite(
        harmful_prompts=read_prompts(demo_data_path("harmful_eval.jsonl")),
        benign_prompts=read_prompts(demo_data_path("benign_eval.jsonl")),
        heldout_texts=read_corpus(demo_data_path("normal_text_eval.jsonl")),
        ood_prompts=read_prompts(demo_data_path("harmful_ood.jsonl")),
        **settings,
    )
