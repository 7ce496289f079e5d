"""The demo data shipped with the package (fastunlearn/demo_data, see its README.md) and the
evaluation suite built from its held-out files."""

from __future__ import annotations

from pathlib import Path

from fastunlearn.data import load_rows, read_corpus, read_prompts
from fastunlearn.eval.report import EvalSuite
from fastunlearn.resources import PACKAGE_DIR

DEMO_DATA_DIR = PACKAGE_DIR / "demo_data"


def demo_data_path(name: str) -> Path:
    """Path of a demo data file, e.g. "harmful_train.jsonl"."""
    path = DEMO_DATA_DIR / name
    if not path.is_file():
        available = sorted(p.name for p in DEMO_DATA_DIR.iterdir() if p.name != "README.md")
        raise FileNotFoundError(f"no demo data file {name!r}; available: {available}")
    return path


def demo_suite(limit: int | None = None, **settings) -> EvalSuite:
    """The held-out demo sets: harmful_eval, benign_eval (split by its lookalike column into
    benign and look-alike prompts), normal_text_eval and harmful_ood (held-out categories and
    phrasings). limit keeps at most that many prompts of each set, evenly spaced through the
    file (the files are grouped by category, so each keeps its share). Keyword arguments set
    the other EvalSuite fields (judge, max_new_tokens, ...)."""
    benign, lookalike = read_benign_sets(demo_data_path("benign_eval.jsonl"))
    return EvalSuite(
        harmful_prompts=evenly_spaced(read_prompts(demo_data_path("harmful_eval.jsonl")), limit),
        benign_prompts=evenly_spaced(benign, limit),
        lookalike_prompts=evenly_spaced(lookalike, limit),
        heldout_texts=read_corpus(demo_data_path("normal_text_eval.jsonl")),
        ood_prompts=evenly_spaced(read_prompts(demo_data_path("harmful_ood.jsonl")), limit),
        **settings,
    )


def read_benign_sets(path: str | Path) -> tuple[list[str], list[str]]:
    """The benign prompts of a file and its look-alikes of harmful requests: the rows whose
    boolean `lookalike` column is true. A file without the column has no look-alikes."""
    prompts = read_prompts(path)
    rows = load_rows(path)
    if "lookalike" not in rows.column_names:
        return prompts, []
    flags = rows["lookalike"]
    # A string "false" would count as true: only real booleans are trusted.
    if not all(isinstance(flag, bool) for flag in flags):
        raise ValueError(f"{path}: the lookalike column must hold true or false in every row")
    benign = [prompt for prompt, flag in zip(prompts, flags, strict=True) if not flag]
    return benign, [prompt for prompt, flag in zip(prompts, flags, strict=True) if flag]


def evenly_spaced(items: list, limit: int | None) -> list:
    """At most limit items, spread evenly over the list (all of them when limit is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    return [items[index * len(items) // limit] for index in range(limit)]
