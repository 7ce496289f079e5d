"""Write test rows in each file format the readers accept."""

import json
from pathlib import Path

import datasets

# suffix -> writer; "" is a folder written by save_to_disk.
FORMATS = [".jsonl", ".json", ".csv", ".tsv", ".parquet", ""]


def write_rows(directory: Path, name: str, suffix: str, rows: list[dict]) -> Path:
    """rows written to directory/name+suffix in that format; returns the path."""
    path = directory / f"{name}{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == ".csv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    elif suffix == ".tsv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False, sep="\t")
    elif suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif suffix == "":
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    else:
        raise ValueError(f"no writer for {suffix!r}")
    return path
