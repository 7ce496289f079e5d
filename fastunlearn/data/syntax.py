"""Syntax checks of CSV and JSON files, made before `datasets` parses them.

`datasets` (through pandas and pyarrow) reads some broken files without an error, into wrong
rows: a CSV whose rows have more fields than its header shifts every column, a row with fewer
gets blank cells, an unbalanced quote takes in the lines after it. Its errors for a malformed
JSON line name neither the file nor the line. These checks read the file with Python's own
parsers and raise a one-line ValueError "FILE:LINE: what is wrong".

Legal CSV keeps working: quoted fields may hold the separator, doubled quotes ("") and line
breaks, a quote inside an unquoted field is text, blank lines are skipped (as pandas does).
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

QUOTE = '"'
JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
# The csv module refuses fields over 128 KiB by default; a document in a cell may be longer.
FIELD_SIZE_LIMIT = 2**31 - 1


def check_json_lines(path: Path) -> None:
    """Every non-blank line of a JSON Lines file must be one JSON object.

    `datasets` also reads JSON values laid out over several lines (pretty-printed objects,
    an array): a file that fails line by line but parses as such values is left to it."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _decoded_line(path, number, raw)
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                line_error = _json_error(path, number, error)
                break
            if not isinstance(value, dict):
                raise ValueError(
                    f"{path}:{number}: not a JSON object (got a {_json_type(value)}); "
                    "each line must hold one row as {...}"
                )
        else:
            return
    text = _read_text(path)
    stream_error = _json_stream_error(text)
    if stream_error is None:
        return
    # A first line that opens an array, or a lone "{", starts JSON laid out over lines:
    # the error of the values read across lines is the one that points at the mistake.
    first_line = next(line for line in text.splitlines() if line.strip()).strip()
    if first_line.startswith("[") or first_line == "{":
        raise ValueError(_json_error(path, stream_error.lineno, stream_error))
    raise ValueError(line_error)


def check_json_document(path: Path) -> None:
    """A .json file must be one JSON document, or JSON Lines (which `datasets` reads from a
    .json file too)."""
    try:
        json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        # A second value after the first: the file is JSON Lines, checked line by line.
        if error.msg == "Extra data":
            check_json_lines(path)
            return
        raise ValueError(_json_error(path, error.lineno, error)) from None


def check_csv(path: Path, separator: str) -> None:
    """Every row must have as many fields as the header, and every quoted field must end
    with its closing quote (followed by the separator or the end of the line).

    ValueError "FILE:LINE: ..." naming the line where the row starts, or for a quote the
    line and column where it opened.
    """
    with (
        open(path, encoding="utf-8-sig", newline="") as handle,
        _field_size_limit(FIELD_SIZE_LIMIT),
    ):
        lines = _RecordLines(handle)
        # strict: text after a closing quote and a quote still open at the end of the file
        # are errors; pandas would take both in silently.
        reader = csv.reader(lines, delimiter=separator, quotechar=QUOTE, strict=True)
        header_length = None
        while True:
            lines.start_record()
            try:
                fields = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as error:
                # Decoding runs ahead of the lines read: _read_text names the bad byte's line.
                _read_text(path)
                raise ValueError(f"{path}: not UTF-8 text ({error.reason})") from None
            except csv.Error as error:
                raise ValueError(_quote_error(path, separator, lines, error)) from None
            # pandas skips blank lines, and lines of spaces alone.
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if header_length is None:
                header_length = len(fields)
            elif len(fields) != header_length:
                raise ValueError(
                    _field_count_error(path, separator, lines, len(fields), header_length)
                )


class _RecordLines:
    """The lines of a file for csv.reader, keeping those of the record being read (the
    quote scan of an error message reads them again)."""

    def __init__(self, handle):
        self.handle = handle
        self.line_number = 0  # of the last line read
        self.first_line = 1  # of the record being read
        self.record: list[str] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self.handle)
        self.line_number += 1
        self.record.append(line)
        return line

    def start_record(self) -> None:
        self.record = []
        self.first_line = self.line_number + 1


@dataclass(frozen=True)
class _QuotedField:
    """A quoted field of a record: where its opening quote is, where the quote that closed
    it is (None: never closed), and whether text follows that quote in the same field."""

    open_line: int
    open_column: int
    close_line: int | None = None
    close_column: int | None = None
    text_after: bool = False


def _quoted_fields(lines: _RecordLines, separator: str) -> list[_QuotedField]:
    """The quoted fields of the record in lines.record, up to the first broken one.

    The csv module's reading done again character by character (its states, less the
    escape character, which is not used here), as it does not say where a quote opened.
    It runs only on the record of an error."""
    fields, state = [], "field start"
    opened = closed = (0, 0)
    for line_number, line in enumerate(lines.record, start=lines.first_line):
        for column, character in enumerate(line, start=1):
            at_end_of_field = character == separator or character in "\r\n"
            if state == "field start":
                if character == QUOTE:
                    state, opened = "quoted", (line_number, column)
                elif not at_end_of_field:
                    state = "unquoted"
            elif state == "unquoted":
                if at_end_of_field:
                    state = "field start"
            elif state == "quoted":
                if character == QUOTE:
                    state, closed = "quote in quoted", (line_number, column)
            elif character == QUOTE:  # a doubled quote: one quote of text
                state = "quoted"
            else:
                fields.append(_QuotedField(*opened, *closed, text_after=not at_end_of_field))
                if not at_end_of_field:
                    return fields
                state = "field start"
    if state == "quoted":
        fields.append(_QuotedField(*opened))
    elif state == "quote in quoted":
        fields.append(_QuotedField(*opened, *closed))
    return fields


def _quote_error(path: Path, separator: str, lines: _RecordLines, error: csv.Error) -> str:
    broken = next(
        (
            field
            for field in _quoted_fields(lines, separator)
            if field.close_line is None or field.text_after
        ),
        None,
    )
    if broken is None:
        return f"{path}:{lines.line_number}: not valid CSV ({error})"
    where = f"{path}:{broken.open_line}"
    if broken.close_line is None:
        return (
            f"{where}: the quote at column {broken.open_column} is never closed: it takes in "
            'every line after it; close it, or double a quote that is text ("")'
        )
    if broken.close_line == broken.open_line:
        return (
            f"{where}: the quoted field at column {broken.open_column} has text after its "
            f"closing quote at column {broken.close_column}; quote the whole field and "
            'double each quote inside it ("")'
        )
    return (
        f"{where}: the quote at column {broken.open_column} is unbalanced: it takes in the "
        f"lines after it up to line {broken.close_line}, where text follows the quote that "
        'closes it; close it, or double a quote that is text ("")'
    )


def _field_count_error(
    path: Path, separator: str, lines: _RecordLines, found: int, expected: int
) -> str:
    message = (
        f"{path}:{lines.first_line}: {found} field{'s' if found != 1 else ''} where the "
        f"header has {expected} columns"
    )
    spanning = next(
        (
            field
            for field in _quoted_fields(lines, separator)
            if field.close_line is not None and field.close_line != field.open_line
        ),
        None,
    )
    if spanning is not None:
        return (
            f"{message}; the quote at line {spanning.open_line}, column "
            f"{spanning.open_column} runs on to line {spanning.close_line}: is it unbalanced?"
        )
    if found > expected:
        return f"{message} (a {separator!r} inside a field that is not quoted?)"
    return f"{message} (a missing {separator!r}, or a row cut short?)"


@contextlib.contextmanager
def _field_size_limit(limit: int) -> Iterator[None]:
    """The csv module's limit is process-wide: set for the check, then restored."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _read_text(path: Path) -> str:
    """The file's text; ValueError naming the line and column of a byte that is not UTF-8."""
    with open(path, "rb") as handle:
        lines = [_decoded_line(path, number, raw) for number, raw in enumerate(handle, start=1)]
    return "".join(lines)


def _json_stream_error(text: str) -> json.JSONDecodeError | None:
    """The error in text read as JSON values one after another, None if there is none."""
    decoder, position = json.JSONDecoder(), 0
    while True:
        position = JSON_WHITESPACE.match(text, position).end()
        if position == len(text):
            return None
        try:
            _, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            return error


def _decoded_line(path: Path, number: int, raw: bytes) -> str:
    try:
        # utf-8-sig on the first line: a byte-order mark is not part of the JSON.
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}:{number}: not UTF-8 text ({error.reason} at column {error.start + 1})"
        ) from None


def _json_error(path: Path, line: int, error: json.JSONDecodeError) -> str:
    # Some of json's messages end in "at" ("Unterminated string starting at").
    return (
        f"{path}:{line}: not valid JSON ({error.msg.removesuffix(' at')} at column {error.colno})"
    )


def _json_type(value) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
