import datasets
import pytest

from fastunlearn.data import load_rows, require_columns
from tests.data.files import FORMATS, write_rows

ROWS = [
    {"prompt": "How do I bake bread at home?", "response": "Mix flour, water and yeast."},
    # "NA" and "None" are text, not missing values, in every format.
    {"prompt": "What is the capital of France?", "response": "None"},
    {"prompt": "Tell me a story about a dragon.", "response": "NA"},
]


@pytest.mark.parametrize("suffix", FORMATS, ids=lambda s: s or "save_to_disk")
def test_each_format_reads_the_rows_back(tmp_path, suffix):
    path = write_rows(tmp_path, "rows", suffix, ROWS)
    assert load_rows(path).to_list() == ROWS


def test_text_file_one_row_per_line_or_one_document(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("first line\nsecond line\n", encoding="utf-8")
    assert load_rows(path)["text"] == ["first line", "second line"]
    assert load_rows(path, sample_by="document")["text"] == ["first line\nsecond line\n"]


def test_dataset_dict_folder_takes_the_named_split(tmp_path):
    path = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(ROWS[:2]),
            "test": datasets.Dataset.from_list(ROWS[2:]),
        }
    ).save_to_disk(str(path))
    assert load_rows(path).to_list() == ROWS[:2]
    assert load_rows(path, split="test").to_list() == ROWS[2:]
    with pytest.raises(ValueError, match=r"no split 'validation'.*\['train', 'test'\]"):
        load_rows(path, split="validation")


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "absent.jsonl"
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        load_rows(path)


def test_folder_not_written_by_save_to_disk(tmp_path):
    (tmp_path / "plain_folder").mkdir()
    with pytest.raises(ValueError, match="plain_folder.*not one written by save_to_disk"):
        load_rows(tmp_path / "plain_folder")


def test_unknown_extension(tmp_path):
    path = tmp_path / "rows.xlsx"
    path.write_bytes(b"not a table")
    with pytest.raises(ValueError, match=r"rows.xlsx: unknown file type '.xlsx'"):
        load_rows(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt", ".parquet"])
def test_zero_byte_file_is_empty(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"empty{suffix} is empty"):
        load_rows(path)


def test_header_only_csv_is_empty(tmp_path):
    path = tmp_path / "header_only.csv"
    path.write_text("prompt,response\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header_only.csv is empty"):
        load_rows(path)


def test_blank_lines_jsonl_is_empty(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="blank.jsonl is empty"):
        load_rows(path)


@pytest.mark.parametrize("suffix", [".parquet", ""], ids=["parquet", "save_to_disk"])
def test_zero_row_table_is_empty(tmp_path, suffix):
    path = tmp_path / f"no_rows{suffix}"
    empty = datasets.Dataset.from_dict({"prompt": [], "response": []})
    empty.to_parquet(str(path)) if suffix else empty.save_to_disk(str(path))
    with pytest.raises(ValueError, match=f"no_rows{suffix} is empty"):
        load_rows(path)


def test_malformed_file_names_the_path(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.jsonl: could not be read as json"):
        load_rows(path)


def test_require_columns_names_file_found_and_expected(tmp_path):
    path = write_rows(tmp_path, "rows", ".jsonl", ROWS)
    dataset = load_rows(path)
    require_columns(dataset, ["prompt"], path)
    with pytest.raises(ValueError) as error:
        require_columns(dataset, ["question", "prompt", "answer"], path)
    message = str(error.value)
    assert str(path) in message
    assert "expected columns ['question', 'prompt', 'answer']" in message
    assert "found ['prompt', 'response']" in message
    assert "missing ['question', 'answer']" in message
