"""Reading tabular files (CSV, JSON, JSON Lines, xlsx) as records that remember where they came from.

Every record carries a location such as ``data.csv:12`` or ``sheet.xlsx: row 4``
so that a loader can name the exact place of a bad value. Column names are
matched case-insensitively with surrounding spaces removed, because the
published datasets spell them differently (``Question`` and ``question``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editsafe.errors import DataError
from editsafe.io import read_jsonl, read_xlsx_rows

TABLE_SUFFIXES = (".csv", ".json", ".jsonl", ".xlsx")


@dataclass(frozen=True)
class Record:
    """One row of a table: its location for error messages and its fields with normalised keys."""

    location: str
    fields: dict[str, Any]

    def get(self, column: str) -> Any:
        """Return the value of ``column`` (case-insensitive), or None when the row lacks it."""
        return self.fields.get(normalise_column(column))


def normalise_column(name: Any) -> str:
    """Return a column name lower-cased with surrounding spaces removed."""
    return str(name).strip().lower()


def read_records(path: Path) -> list[Record]:
    """Read a table with a header row (CSV, xlsx), a JSON list of objects, or a JSON Lines file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv_records(path)
    if suffix == ".jsonl":
        return [Record(f"{path}:{number}", _normalise(row)) for number, row in _numbered_jsonl(path)]
    if suffix == ".json":
        payload = read_json(path)
        if not isinstance(payload, list):
            raise DataError(f"{path}: expected a JSON list of objects, got {type(payload).__name__}")
        records = []
        for index, item in enumerate(payload):
            if not isinstance(item, dict):
                raise DataError(f"{path}: item {index}: expected a JSON object, got {type(item).__name__}")
            records.append(Record(f"{path}: item {index}", _normalise(item)))
        return records
    if suffix == ".xlsx":
        return _read_xlsx_records(path)
    raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}")


def read_json(path: Path) -> Any:
    """Parse a JSON file, naming the line and column of a syntax error."""
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: invalid JSON at column {error.colno} ({error.msg})") from error


def read_csv_rows(path: Path) -> Iterable[tuple[int, list[str]]]:
    """Yield ``(line number, cells)`` for each non-blank row of a CSV file without a header."""
    reader = csv.reader(_read_text(path).splitlines(keepends=True), strict=True)
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                yield reader.line_num, cells
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: invalid CSV ({error})") from error


def csv_header(path: Path) -> list[str]:
    """Return the first row of a CSV file, normalised like column names (empty for an empty file)."""
    for _, cells in read_csv_rows(path):
        return [normalise_column(cell) for cell in cells]
    return []


def require_columns(records: list[Record], columns: Iterable[str], path: Path) -> None:
    """Raise DataError naming the file when the first record lacks any of ``columns``."""
    if not records:
        raise DataError(f"{path}: the file contains no rows")
    missing = [column for column in columns if normalise_column(column) not in records[0].fields]
    if missing:
        found = ", ".join(sorted(records[0].fields)) or "none"
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {found}")


def required_text(record: Record, column: str) -> str:
    """Return the non-empty text of ``column`` in ``record``, or raise DataError at its location."""
    value = record.get(column)
    if value is None or not str(value).strip():
        raise DataError(f"{record.location}: empty or missing {column!r}; every row needs a {column}")
    if not isinstance(value, (str, int, float)):
        raise DataError(f"{record.location}: {column!r} must be text, got {type(value).__name__}")
    return str(value).strip()


def _read_csv_records(path: Path) -> list[Record]:
    rows = list(read_csv_rows(path))
    if not rows:
        return []
    _, header = rows[0]
    columns = [normalise_column(cell) for cell in header]
    records = []
    for line, cells in rows[1:]:
        if len(cells) > len(columns):
            raise DataError(f"{path}:{line}: {len(cells)} cells but the header has {len(columns)} columns")
        records.append(Record(f"{path}:{line}", dict(zip(columns, cells))))
    return records


def _read_xlsx_records(path: Path) -> list[Record]:
    rows = read_xlsx_rows(path)
    if not rows:
        return []
    columns = [normalise_column(cell) if cell is not None else "" for cell in rows[0]]
    records = []
    for number, cells in enumerate(rows[1:], start=2):
        if all(cell is None or not str(cell).strip() for cell in cells):
            continue
        records.append(Record(f"{path}: row {number}", dict(zip(columns, cells))))
    return records


def _numbered_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    # read_jsonl names file:line for invalid lines; it skips blank lines, so recover the numbers here.
    records = read_jsonl(path)
    numbers = [number for number, line in enumerate(_read_text(path).split("\n"), start=1) if line.strip()]
    return list(zip(numbers, records))


def _normalise(row: dict[str, Any]) -> dict[str, Any]:
    return {normalise_column(key): value for key, value in row.items()}


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start}); re-save the file as UTF-8") from error
