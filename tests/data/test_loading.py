import json
import os

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


@pytest.mark.parametrize(
    "text, line",
    [
        ('{"prompt": "fine"}\n{"prompt": \n', 2),
        # A bad line between good ones fails inside `datasets` with no file or line at all.
        ('{"prompt": "a"}\n\n{"prompt": "b", "response": \n{"prompt": "c"}\n', 3),
        ('{"prompt": "a\n{"prompt": "b"}\n', 1),
    ],
)
def test_malformed_jsonl_line_names_file_and_line(tmp_path, text, line):
    path = tmp_path / "broken.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"broken.jsonl:{line}: not valid JSON \(.*column \d+"):
        load_rows(path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a"}\n["b"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows.jsonl:2: not a JSON object \(got a list\)"):
        load_rows(path)


def test_malformed_json_document_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"prompt": "a"},\n {"prompt": }]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.json:2: not valid JSON \(.*column 13"):
        load_rows(path)


@pytest.mark.parametrize(
    "text",
    [
        '{\n  "prompt": "a"\n}\n{\n  "prompt": "b"\n}\n',
        '[{"prompt": "a"},\n {"prompt": "b"}]\n',
        '{"prompt": "a"} {"prompt": "b"}\n',
    ],
    ids=["pretty-printed", "array", "two-on-a-line"],
)
def test_json_laid_out_over_lines_in_a_jsonl_file_still_reads(tmp_path, text):
    path = tmp_path / "rows.jsonl"
    path.write_text(text, encoding="utf-8")
    assert load_rows(path).to_list() == [{"prompt": "a"}, {"prompt": "b"}]


def test_broken_json_laid_out_over_lines_names_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('[\n  {"prompt": "a"},\n  {"prompt": }\n]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows.jsonl:3: not valid JSON \(Expecting value"):
        load_rows(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_bytes_that_are_not_utf8_name_the_line(tmp_path, suffix):
    # Far enough into the file that a decoder reading ahead meets the byte early.
    good = [{"prompt": f"Prompt {i}", "response": "Fine."} for i in range(2000)]
    path = write_rows(tmp_path, "rows", suffix, good)
    path.write_bytes(path.read_bytes() + b'{"prompt": "caf\xe9", "response": "x"}\n')
    line = 2001 if suffix == ".jsonl" else 2002
    with pytest.raises(ValueError, match=rf"rows{suffix}:{line}: not UTF-8 text"):
        load_rows(path)


def test_json_lines_in_a_json_file_still_read(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    assert load_rows(path).to_list() == ROWS


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


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet", ".txt"])
def test_file_replaced_with_its_old_modification_time_reads_its_new_rows(tmp_path, suffix):
    # cp -p, rsync -a and tar x keep the modification time of the file they replace.
    old_rows = [{"text": "first version of the row"}]
    new_rows = [{"text": "second version of the row"[: len(old_rows[0]["text"])]}]
    path = write_text_rows(tmp_path, suffix, old_rows)
    assert load_rows(path).to_list() == old_rows
    stat = path.stat()
    write_text_rows(tmp_path, suffix, new_rows)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert load_rows(path).to_list() == new_rows


def write_text_rows(directory, suffix, rows):
    if suffix != ".txt":
        return write_rows(directory, "rows", suffix, rows)
    path = directory / "rows.txt"
    path.write_text("".join(row["text"] + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(tmp_path, text: str, name: str = "rows.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_with_more_fields_than_the_header(tmp_path):
    # Unquoted commas in every response: pandas would make the prompts an index and shift
    # the columns left without an error.
    path = write_csv(tmp_path, "prompt,response\nHow?,Mix flour, water\nWhy?,Because, then\n")
    with pytest.raises(ValueError, match=r"rows.csv:2: 3 fields where the header has 2 columns"):
        load_rows(path)


def test_csv_row_with_more_fields_among_good_ones(tmp_path):
    path = write_csv(tmp_path, "prompt,response\nHow?,Mix.\n\nWhy?,Because, then\nWhat?,Paris\n")
    with pytest.raises(ValueError, match=r"rows.csv:4: 3 fields where the header has 2 columns"):
        load_rows(path)


def test_csv_row_with_fewer_fields_than_the_header(tmp_path):
    path = write_csv(tmp_path, "prompt,response\nHow?,Mix flour\nWhy?\nWhat?,Paris\n")
    with pytest.raises(ValueError, match=r"rows.csv:3: 1 field where the header has 2 columns"):
        load_rows(path)


def test_tsv_row_with_a_wrong_field_count(tmp_path):
    path = write_csv(tmp_path, "prompt\tresponse\nHow?\tMix\tflour\n", name="rows.tsv")
    with pytest.raises(ValueError, match=r"rows.tsv:2: 3 fields where the header has 2 columns"):
        load_rows(path)


def test_csv_quote_never_closed(tmp_path):
    path = write_csv(
        tmp_path, 'prompt,response\n"How do I bake?,Mix flour.\nWhat?,Paris.\nTell me,Once.\n'
    )
    with pytest.raises(ValueError, match=r"rows.csv:2: the quote at column 1 is never closed"):
        load_rows(path)


def test_csv_unbalanced_quote_closed_by_a_later_rows_quote(tmp_path):
    # The quote opened on line 2 takes in line 3 and closes at the first quote of line 4;
    # pandas reads one row holding all three lines.
    path = write_csv(
        tmp_path,
        'prompt,response\nHow?,"Mix flour, water\nWhat?,Paris.\nTell me,"Once upon."\n',
    )
    with pytest.raises(ValueError, match=r"rows.csv:2: the quote at column 6 is unbalanced"):
        load_rows(path)


def test_csv_text_after_a_closing_quote(tmp_path):
    path = write_csv(tmp_path, 'prompt,response\n"To be" is from which play?,Hamlet\n')
    with pytest.raises(ValueError, match=r"rows.csv:2: the quoted field at column 1 has text"):
        load_rows(path)


def test_csv_unbalanced_quote_giving_a_wrong_field_count(tmp_path):
    path = write_csv(
        tmp_path, 'prompt,response\n"How do I bake?,Mix flour.\nWhat?,Paris."\nTell me,Once.\n'
    )
    with pytest.raises(
        ValueError,
        match=r"rows.csv:2: 1 field where the header has 2 columns.*quote at line 2, column 1 "
        r"runs on to line 3",
    ):
        load_rows(path)


def test_legal_quoting_reads_back(tmp_path):
    # Quoted separators, doubled quotes, newlines inside quotes (\n and \r\n), a quote
    # inside an unquoted field, blank lines and a byte-order mark are all legal.
    path = write_csv(
        tmp_path,
        "\ufeffprompt,response\r\n"
        '"How do I bake bread, at home?","Mix flour, water\nand ""yeast"".\r\nThen bake."\r\n'
        "\r\n"
        'What is 5" in cm?,About 12.7 cm.\r\n'
        '"Tell me a story.",""\r\n',
    )
    assert load_rows(path).to_list() == [
        {
            "prompt": "How do I bake bread, at home?",
            "response": 'Mix flour, water\nand "yeast".\r\nThen bake.',
        },
        {"prompt": 'What is 5" in cm?', "response": "About 12.7 cm."},
        {"prompt": "Tell me a story.", "response": ""},
    ]


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_written_csv_with_separators_quotes_and_newlines_reads_back(tmp_path, suffix):
    rows = [
        {"prompt": 'Say "hi",\tthen\nleave', "response": 'One, two\n\nthree "four"'},
        {"prompt": "A cell longer than the csv module's default limit", "response": "x" * 200_000},
    ]
    assert load_rows(write_rows(tmp_path, "rows", suffix, rows)).to_list() == rows
