"""Local files -> `datasets.Dataset`, the format chosen by the file extension or folder.

Parsing is left to the `datasets` library (its json / csv / parquet / text builders and
`load_from_disk`). This module adds the checks users hit first, each naming the path: a
missing file (FileNotFoundError), an empty one, and columns other than the expected ones
(ValueError). CSV and JSON files get their syntax checked first (`syntax`): `datasets` reads
some broken ones into wrong rows without an error.

`datasets` caches a parsed file under a key made of its path and modification time, so a file
replaced by one that keeps the old time (cp -p, rsync -a, tar x) would read as its old rows.
The cache here is a folder per digest of the file's bytes instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import datasets

from fastunlearn.data.syntax import check_csv, check_json_document, check_json_lines

# suffix -> (datasets builder, builder options)
BUILDERS: dict[str, tuple[str, dict]] = {
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    # keep_default_na=False: cells reading "NA" or "None" are text, not missing values.
    ".csv": ("csv", {"keep_default_na": False}),
    ".tsv": ("csv", {"sep": "\t", "keep_default_na": False}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),
}
# suffix -> the syntax check made before the builder reads the file
SYNTAX_CHECKS: dict[str, Callable[[Path], None]] = {
    ".jsonl": check_json_lines,
    ".json": check_json_document,
    ".csv": lambda path: check_csv(path, ","),
    ".tsv": lambda path: check_csv(path, "\t"),
}


def load_rows(
    path: str | Path,
    *,
    split: str = "train",
    sample_by: Literal["line", "document"] = "line",
) -> datasets.Dataset:
    """Read one local file (.jsonl, .json, .csv, .tsv, .parquet, .txt) or a folder written
    by `save_to_disk` into a `datasets.Dataset`.

    split: the split to take when the folder holds a DatasetDict (ignored for files).
    sample_by: for .txt, one row per line (column "text") or one row for the whole file.

    Raises FileNotFoundError for a missing path, ValueError for an unknown extension, a
    file that cannot be parsed (naming the line for CSV and JSON), or one with no rows.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    dataset = _load_folder(path, split) if path.is_dir() else _load_file(path, sample_by)
    if len(dataset) == 0:
        raise ValueError(f"{path} is empty: it holds no rows")
    return dataset


def require_columns(dataset: datasets.Dataset, expected: Sequence[str], path: str | Path) -> None:
    """ValueError naming the file, the columns found and the columns expected, unless every
    expected column is present (extra columns are fine)."""
    missing = [column for column in expected if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{path}: expected columns {list(expected)}, found {dataset.column_names} "
            f"(missing {missing})"
        )


def _load_file(path: Path, sample_by: str) -> datasets.Dataset:
    suffix = path.suffix.lower()
    if suffix not in BUILDERS:
        raise ValueError(
            f"{path}: unknown file type {suffix!r}; expected one of {sorted(BUILDERS)} "
            "or a folder written by save_to_disk"
        )
    # The builders fail on a zero-byte file with errors that do not say "empty".
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: the file has no content")
    if suffix in SYNTAX_CHECKS:
        SYNTAX_CHECKS[suffix](path)
    builder_name, options = BUILDERS[suffix]
    if builder_name == "text":
        options = {**options, "sample_by": sample_by}
    builder = datasets.load_dataset_builder(
        builder_name, data_files=str(path), cache_dir=_content_cache_dir(path), **options
    )
    try:
        builder.download_and_prepare()
    # Some parse errors leave `datasets` as a bare ValueError (pyarrow's ArrowInvalid is one).
    except (datasets.exceptions.DatasetGenerationError, ValueError) as error:
        cause = error.__cause__ or error
        raise ValueError(f"{path}: could not be read as {builder_name}: {cause}") from error
    # A header-only CSV or a zero-row Parquet file gives no split at all, which
    # as_dataset would report as 'Instruction "train" corresponds to no data'.
    if not builder.info.splits["train"].num_examples:
        raise ValueError(f"{path} is empty: it holds no rows")
    return builder.as_dataset(split="train")


def _content_cache_dir(path: Path) -> str:
    """The `datasets` cache folder for the file's bytes (see the module's docstring)."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "fastunlearn-local" / digest)


def _load_folder(path: Path, split: str) -> datasets.Dataset:
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise ValueError(f"{path} is a folder but not one written by save_to_disk") from error
    except IndexError as error:
        # datasets 5.2 fails this way on a saved dataset with zero rows (no data shard).
        raise ValueError(f"{path} is empty: it holds no rows") from error
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{path}: no split {split!r}; the splits are {list(loaded)}")
        return loaded[split]
    return loaded
