"""Loading and validating edit requests from files.

Three layouts are read:

* editsafe's JSON Lines (``.jsonl``), one request per line with the fields
  ``prompt``, ``subject`` and ``target_new`` (required), and ``id``,
  ``category``, ``target_true``, ``paraphrase_prompts`` and
  ``locality_prompts`` (a list of ``{"prompt", "answer"}`` objects). A
  ``.json`` file holding a list of such objects and a ``.csv`` file with the
  same column names (without the list fields) are read the same way.
* The NoIntentEdit sheet (``.xlsx``, or ``.csv`` whose header has
  ``Cluster``, ``Question`` and ``Answer``): each row becomes a request with
  id ``noint-<row>`` (the sheet row number, header = row 1, zero-padded to
  three digits), category from Cluster, prompt from Question and target_new
  from Answer. The subject comes from the user's mapping or from the rule in
  :mod:`editsafe.nointentedit`.

Every error names the file and the line (or sheet row) and says what to fix.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from editsafe.errors import DataError
from editsafe.io import read_json, read_jsonl
from editsafe.nointentedit import SHEET_COLUMNS, SubjectRule, choose_subject, load_subject_map, read_sheet, row_id

if TYPE_CHECKING:
    from editsafe.rome import EditRequest

logger = logging.getLogger(__name__)

REQUIRED_FIELDS: tuple[str, ...] = ("prompt", "subject", "target_new")
OPTIONAL_FIELDS: tuple[str, ...] = ("id", "category", "target_true", "paraphrase_prompts", "locality_prompts")


def load_edit_requests(
    path: str | os.PathLike[str],
    *,
    subject_rule: SubjectRule = "auto",
    subjects: Mapping[str, str] | str | os.PathLike[str] | None = None,
) -> list[EditRequest]:
    """Read and validate every edit request in ``path``.

    ``subject_rule`` (``auto`` or ``trailing``, see :mod:`editsafe.nointentedit`)
    picks the subject of NoIntentEdit sheet rows; ``subjects`` overrides it per
    row with a mapping of row id (``noint-002`` or ``2``) to subject, given as a
    dict or as a JSON object or ``id,subject`` CSV file. A request without an
    id gets ``<file stem>-<line>``. Raises :class:`DataError` naming
    ``file:line`` for a missing field, an empty target, a subject that does not
    occur in its prompt or a duplicate id.
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"{source}: edit file not found")
    suffix = source.suffix.lower()
    if suffix == ".xlsx" or (suffix == ".csv" and _is_sheet_csv(source)):
        located = _located_sheet_rows(source, subject_rule, subjects)
    elif subjects is not None:
        raise DataError(
            f"{source}: a subject mapping applies to NoIntentEdit sheets only; give each request its own subject"
        )
    elif suffix == ".jsonl":
        located = _numbered_jsonl(source)
    elif suffix == ".json":
        located = _numbered_json_list(source)
    elif suffix == ".csv":
        located = _numbered_csv(source)
    else:
        raise DataError(f"{source}: unsupported edit file type {suffix!r}; use .jsonl, .json, .csv or .xlsx")

    requests: list[EditRequest] = []
    first_line_of_id: dict[str, int] = {}
    ignored: set[str] = set()
    for number, raw in located:
        where = f"{source}:{number}"
        request = _build_request(raw, where, default_id=f"{source.stem}-{number:03d}")
        identifier = str(request.id)
        if identifier in first_line_of_id:
            raise DataError(
                f"{where}: duplicate id {identifier!r} (first used on line {first_line_of_id[identifier]}); "
                "give every request a unique id"
            )
        first_line_of_id[identifier] = number
        ignored.update(set(raw) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
        requests.append(request)
    if ignored:
        logger.warning("%s: ignoring unknown field(s) %s", source, ", ".join(sorted(ignored)))
    return requests


def _numbered_jsonl(source: Path) -> list[tuple[int, dict[str, Any]]]:
    """Pair each record with its line number (read_jsonl skips blank lines, so count them here)."""
    records = read_jsonl(source)
    numbers = [
        number
        for number, line in enumerate(source.read_text(encoding="utf-8").split("\n"), start=1)
        if line.strip()
    ]
    return list(zip(numbers, records))


def _numbered_json_list(source: Path) -> list[tuple[int, dict[str, Any]]]:
    payload = read_json(source)
    if not isinstance(payload, list):
        raise DataError(f"{source}: expected a JSON list of request objects, got {type(payload).__name__}")
    located: list[tuple[int, dict[str, Any]]] = []
    for number, item in enumerate(payload, start=1):
        if not isinstance(item, dict):
            raise DataError(f"{source}:{number}: item {number} is a {type(item).__name__}, expected an object")
        located.append((number, item))
    return located


def _numbered_csv(source: Path) -> list[tuple[int, dict[str, Any]]]:
    with open(source, newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        return [
            (number, {key: value for key, value in row.items() if key and value not in (None, "")})
            for number, row in enumerate(reader, start=2)
            if any(value for value in row.values())
        ]


def _is_sheet_csv(source: Path) -> bool:
    with open(source, newline="", encoding="utf-8-sig") as stream:
        header = next(csv.reader(stream), [])
    names = {cell.strip().lower() for cell in header}
    return "prompt" not in names and "question" in names


def _build_request(raw: dict[str, Any], where: str, *, default_id: str) -> EditRequest:
    """Check the required fields with specific messages, then let :class:`EditRequest` check the rest."""
    from editsafe.rome import EditRequest

    for name in REQUIRED_FIELDS:
        if name not in raw:
            raise DataError(f"{where}: missing field {name!r}; every request needs {', '.join(REQUIRED_FIELDS)}")
        value = raw[name]
        if not isinstance(value, str):
            raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__} {value!r}")
        if not value.strip():
            raise DataError(f"{where}: field {name!r} is empty; give it a non-empty text")
    record = dict(raw)
    if record.get("id") in (None, ""):
        record["id"] = default_id
    return EditRequest.from_dict(record, source=where)


def _located_sheet_rows(
    source: Path,
    subject_rule: SubjectRule,
    subjects: Mapping[str, str] | str | os.PathLike[str] | None,
) -> list[tuple[int, dict[str, Any]]]:
    """Turn NoIntentEdit rows into request records, choosing each row's subject."""
    rows = read_sheet(source)
    mapping = load_subject_map(subjects) if subjects is not None else {}
    unused = set(mapping) - {row_id(row.line) for row in rows}
    if unused:
        raise DataError(
            f"{source}: the subject mapping names rows that the sheet does not have: {', '.join(sorted(unused))}"
        )

    located: list[tuple[int, dict[str, Any]]] = []
    for row in rows:
        where = f"{source}:{row.line}"
        for name, value in zip(SHEET_COLUMNS[1:], (row.question, row.answer)):
            if not value:
                raise DataError(f"{where}: column {name!r} is empty; fill it in or delete the row")
        identifier = row_id(row.line)
        subject = mapping.get(identifier) or choose_subject(row.question, subject_rule)
        if subject is None:
            raise DataError(
                f"{where}: the {subject_rule!r} subject rule found no subject in {row.question!r}; "
                f"give one in a subject mapping ({identifier} -> subject)"
            )
        record: dict[str, Any] = {"id": identifier, "prompt": row.question, "subject": subject, "target_new": row.answer}
        if row.cluster:
            record["category"] = row.cluster
        located.append((row.line, record))
    return located
