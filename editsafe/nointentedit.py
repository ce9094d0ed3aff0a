"""The NoIntentEdit spreadsheet layout and the rule that picks a subject for its rows.

NoIntentEdit (Hazra et al., 2024) publishes its unintentional edit instances as
a sheet with the columns ``Cluster``, ``Question`` and ``Answer``. A ROME edit
also needs a subject, a span of the question whose last token carries the
fact, which the sheet does not give. :func:`choose_subject` picks one by a
fixed rule, and users can override it per row with a mapping file.

The subject rule (``auto``):

1. Split the question on whitespace and strip quotes, brackets, commas,
   question marks and similar marks from each word's edges.
2. Capitalised run: the longest run of consecutive words that start with an
   upper-case letter or a digit, leaving out the question's first word (it is
   capitalised anyway) and the pronoun "I". A tie goes to the last run.
   "What is the logical foundation of the Trolley Problem in ethics?" gives
   "Trolley Problem".
3. Otherwise the trailing phrase: skip stop words (function words and a few
   common verbs, see ``STOP_WORDS`` and ``BOUNDARY_VERBS``) at the end of the
   question, then take up to three consecutive words that are not stop words,
   ending at the last one, and drop leading words that end in "ing" while more
   than one word is left. "What factors contribute to income inequality?"
   gives "income inequality"; "... play in shaping ancient civilizations?"
   gives "ancient civilizations".

The ``trailing`` rule applies step 3 alone. Both rules are deterministic and
return a span that occurs verbatim in the question.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from editsafe.errors import DataError
from editsafe.io import read_json, read_xlsx_rows

SubjectRule = Literal["auto", "trailing"]
SUBJECT_RULES: tuple[str, ...] = ("auto", "trailing")
SHEET_COLUMNS: tuple[str, ...] = ("Cluster", "Question", "Answer")
ROW_ID_PREFIX = "noint-"
TRAILING_PHRASE_WORDS = 3

# Function words that never end a subject: articles, pronouns, auxiliaries,
# prepositions, conjunctions and question words.
STOP_WORDS = frozenset(
    """a an the this that these those some any each every all both either neither no
    i you he she it we they me him her us them my your his its our their
    is are was were be been being am do does did done have has had can could will would
    shall should may might must of in on at to for from by with about into onto over under
    between among through during before after above below against without within
    and or but nor so yet if than then as what which who whom whose when where why how
    there here not more most other such own same very too just also only
    towards toward despite across around like near via per upon
    """.split()
)
# Common verbs of the published questions that end a trailing phrase like a stop word.
BOUNDARY_VERBS = frozenset(
    """affect affects impact impacts influence influences challenge challenges spread face play gain
    guide address prevent cause causes lead use make help differ contribute struggle believe argue
    """.split()
)

_EDGE_MARKS = "\"'“”‘’()[]{}«»,;:.!?"


@dataclass(frozen=True)
class SheetRow:
    """One row of a NoIntentEdit sheet; ``line`` is its row number in the file (header = 1)."""

    line: int
    cluster: str
    question: str
    answer: str


def row_id(line: int) -> str:
    """Return the edit id of the sheet row at ``line``, for example ``noint-002``."""
    return f"{ROW_ID_PREFIX}{line:03d}"


def choose_subject(question: str, rule: SubjectRule = "auto") -> str | None:
    """Return the subject span of ``question`` by ``rule``, or None when no word qualifies."""
    if rule not in SUBJECT_RULES:
        raise DataError(f"unknown subject rule {rule!r}; allowed: {', '.join(SUBJECT_RULES)}")
    words = _words_with_offsets(question)
    chosen = _longest_capitalised_run(words) if rule == "auto" else []
    if not chosen:
        chosen = _trailing_phrase(words)
    if not chosen:
        return None
    return question[chosen[0][1]:chosen[-1][2]]


_Word = tuple[str, int, int]


def _words_with_offsets(question: str) -> list[_Word]:
    """Split on whitespace and strip marks from each word's edges, keeping character offsets."""
    words: list[_Word] = []
    for match in re.finditer(r"\S+", question):
        raw = match.group(0)
        stripped = raw.strip(_EDGE_MARKS)
        if not stripped:
            continue
        start = match.start() + raw.index(stripped)
        words.append((stripped, start, start + len(stripped)))
    return words


def _is_capitalised(word: str) -> bool:
    return (word[0].isupper() or word[0].isdigit()) and word != "I"


def _is_boundary(word: str) -> bool:
    return word.lower() in STOP_WORDS or word.lower() in BOUNDARY_VERBS


def _longest_capitalised_run(words: list[_Word]) -> list[_Word]:
    best: list[_Word] = []
    current: list[_Word] = []
    for word in words[1:] + [("", 0, 0)]:
        if word[0] and _is_capitalised(word[0]):
            current.append(word)
            continue
        if current and len(current) >= len(best):
            best = current
        current = []
    return best


def _trailing_phrase(words: list[_Word]) -> list[_Word]:
    end = len(words)
    while end > 0 and _is_boundary(words[end - 1][0]):
        end -= 1
    start = end
    while start > 0 and end - start < TRAILING_PHRASE_WORDS and not _is_boundary(words[start - 1][0]):
        start -= 1
    # A leading gerund ("shaping ancient civilizations") is a verb, not part of the noun phrase.
    while end - start > 1 and words[start][0].lower().endswith("ing"):
        start += 1
    return words[start:end]


def read_sheet(path: Path) -> list[SheetRow]:
    """Read the rows of a NoIntentEdit ``.xlsx`` or ``.csv`` file, skipping empty rows."""
    table = read_xlsx_rows(path) if path.suffix.lower() == ".xlsx" else _read_csv(path)
    if not table:
        raise DataError(f"{path}: the file is empty; expected a header row with {', '.join(SHEET_COLUMNS)}")
    header = [str(cell).strip().lower() if cell is not None else "" for cell in table[0]]
    missing = [name for name in SHEET_COLUMNS if name.lower() not in header]
    if missing:
        raise DataError(
            f"{path}:1: missing column(s) {', '.join(missing)}; the NoIntentEdit layout has the columns "
            f"{', '.join(SHEET_COLUMNS)} (found {', '.join(repr(name) for name in header if name) or 'none'})"
        )
    positions = {name: header.index(name.lower()) for name in SHEET_COLUMNS}

    rows: list[SheetRow] = []
    for line, cells in enumerate(table[1:], start=2):
        values = {name: _cell_text(cells, index) for name, index in positions.items()}
        if not any(values.values()):
            continue
        rows.append(SheetRow(line, values["Cluster"], values["Question"], values["Answer"]))
    return rows


def _cell_text(cells: tuple[Any, ...] | list[Any], index: int) -> str:
    if index >= len(cells) or cells[index] is None:
        return ""
    return str(cells[index]).strip()


def _read_csv(path: Path) -> list[tuple[Any, ...]]:
    with open(path, newline="", encoding="utf-8-sig") as stream:
        return [tuple(row) for row in csv.reader(stream)]


def load_subject_map(source: Mapping[str, str] | str | os.PathLike[str]) -> dict[str, str]:
    """Read a row id -> subject mapping from a dict, a JSON object file or a two-column CSV.

    Keys may be full ids (``noint-002``) or bare row numbers (``2``); both are
    normalised to full ids. A CSV has the header ``id,subject``.
    """
    if isinstance(source, Mapping):
        raw = dict(source)
        origin = "subjects mapping"
    else:
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise DataError(f"{path}: subject mapping file not found")
        raw = _read_subject_csv(path) if path.suffix.lower() == ".csv" else _read_subject_json(path)
    mapping: dict[str, str] = {}
    for key, subject in raw.items():
        if not isinstance(subject, str) or not subject.strip():
            raise DataError(f"{origin}: the subject for {key!r} must be a non-empty string, got {subject!r}")
        mapping[_normalise_row_key(str(key), origin)] = subject
    return mapping


def _read_subject_json(path: Path) -> dict[str, Any]:
    payload = read_json(path)
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected a JSON object mapping row ids to subjects, got {type(payload).__name__}")
    return payload


def _read_subject_csv(path: Path) -> dict[str, str]:
    mapping: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        if reader.fieldnames is None or not {"id", "subject"} <= set(reader.fieldnames):
            raise DataError(f"{path}:1: expected the header id,subject, got {reader.fieldnames}")
        for line, record in enumerate(reader, start=2):
            if not record.get("id"):
                raise DataError(f"{path}:{line}: missing id")
            mapping[record["id"]] = record.get("subject") or ""
    return mapping


def _normalise_row_key(key: str, origin: str) -> str:
    text = key.strip()
    number = text[len(ROW_ID_PREFIX):] if text.startswith(ROW_ID_PREFIX) else text
    if not number.isdigit():
        raise DataError(f"{origin}: invalid row id {key!r}; use a sheet row number such as 2 or an id such as noint-002")
    return row_id(int(number))
