"""Loaders for the safety datasets in their published file layouts.

Each loader returns a list of :class:`Prompt`. The layouts:

=============  ==============================================================
advbench       CSV with a ``goal`` column (``target`` is ignored)
dangerousqa    JSON list of question strings
harmfulqa      nested JSON ``{topic: {subtopic: [questions]}}``, or a flat
               table (CSV, JSON list, JSONL) with topic, subtopic, question
nichehazardqa  table with ``Question`` and ``Domain`` (CSV, JSON, JSONL)
hexphi         a folder of one CSV per category, or a single CSV: no header,
               one instruction per row, the category from the file name
xstest         table with ``prompt``, ``type`` and ``label`` (safe/unsafe)
nointentedit   xlsx or CSV with ``Cluster``, ``Question``, ``Answer``
generic        any table (CSV, JSON list, JSONL, xlsx); ``field`` names the
               prompt column
=============  ==============================================================

Column names match case-insensitively. Prompts from the harmful datasets carry
the label ``unsafe``; XSTest carries its own labels; NoIntentEdit and the
generic loader leave the label empty unless a label column is named.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from editsafe.errors import ConfigError, DataError
from editsafe.evaluation.readers import (
    Record,
    csv_header,
    read_csv_rows,
    read_json,
    read_records,
    require_columns,
    required_text,
)

logger = logging.getLogger(__name__)

UNSAFE = "unsafe"
SAFE = "safe"
GENERIC_FIELDS = ("prompt", "question", "goal", "instruction", "text")


@dataclass(frozen=True)
class Prompt:
    """One evaluation prompt: a stable id within its dataset, the text, a category and a safe/unsafe label."""

    id: str
    text: str
    category: str | None = None
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the prompt as a JSON-ready dict."""
        return asdict(self)


@dataclass
class Dataset:
    """Prompts loaded from one file or folder, with the loader that read them."""

    name: str
    path: Path
    loader: str
    prompts: list[Prompt]

    def describe(self) -> dict[str, Any]:
        """Return the JSON record that names this dataset in reports."""
        return {"name": self.name, "path": str(self.path), "loader": self.loader, "n": len(self.prompts)}


def load_advbench(path: Path) -> list[Prompt]:
    """Load AdvBench harmful behaviours: a table with a ``goal`` column (or only ``prompt``)."""
    records = read_records(path)
    has_prompt_only = bool(records) and records[0].get("goal") is None and records[0].get("prompt") is not None
    column = "prompt" if has_prompt_only else "goal"
    require_columns(records, [column], path)
    return _from_records(records, text_column=column, label=UNSAFE)


def load_dangerousqa(path: Path) -> list[Prompt]:
    """Load DangerousQA: a JSON list of question strings (a table with ``question`` also works)."""
    if path.suffix.lower() != ".json":
        records = read_records(path)
        require_columns(records, ["question"], path)
        return _from_records(records, text_column="question", label=UNSAFE)
    payload = read_json(path)
    if not isinstance(payload, list):
        raise DataError(f"{path}: expected a JSON list of question strings, got {type(payload).__name__}")
    prompts = []
    for index, item in enumerate(payload):
        if not isinstance(item, str) or not item.strip():
            raise DataError(f"{path}: item {index}: expected a non-empty question string, got {item!r:.60}")
        prompts.append(Prompt(id=str(index), text=item.strip(), label=UNSAFE))
    return prompts


def load_harmfulqa(path: Path) -> list[Prompt]:
    """Load HarmfulQA: nested JSON topic → subtopic → questions, or a flat table; the category is the topic."""
    payload = read_json(path) if path.suffix.lower() == ".json" else None
    if payload is None or isinstance(payload, list):
        records = read_records(path)
        require_columns(records, ["topic", "question"], path)
        return _from_records(records, text_column="question", category_column="topic", label=UNSAFE)
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected a JSON object of topics, got {type(payload).__name__}")
    prompts = []
    for topic, subtopics in payload.items():
        if not isinstance(subtopics, dict):
            raise DataError(f"{path}: topic {topic!r}: expected an object of subtopics, got {type(subtopics).__name__}")
        for subtopic, questions in subtopics.items():
            if not isinstance(questions, list):
                raise DataError(f"{path}: {topic!r} → {subtopic!r}: expected a list of questions")
            for index, question in enumerate(questions):
                if not isinstance(question, str) or not question.strip():
                    raise DataError(f"{path}: {topic!r} → {subtopic!r} item {index}: expected a non-empty string")
                prompts.append(Prompt(id=str(len(prompts)), text=question.strip(), category=topic, label=UNSAFE))
    return prompts


def load_nichehazardqa(path: Path) -> list[Prompt]:
    """Load NicheHazardQA: a table with ``Question`` and ``Domain``; the category is the domain."""
    records = read_records(path)
    require_columns(records, ["question", "domain"], path)
    return _from_records(records, text_column="question", category_column="domain", label=UNSAFE)


def load_hexphi(path: Path) -> list[Prompt]:
    """Load HEx-PHI: a folder of headerless CSVs (one per category, named after it) or one such CSV."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no .csv files in this folder; HEx-PHI is one CSV per category")
    prompts = []
    for file in files:
        category = file.stem
        for line, cells in read_csv_rows(file):
            text = cells[0].strip() if cells else ""
            if not text:
                raise DataError(f"{file}:{line}: empty instruction in the first column")
            prompts.append(Prompt(id=f"{category}-{line}", text=text, category=category, label=UNSAFE))
    return prompts


def load_xstest(path: Path) -> list[Prompt]:
    """Load XSTest: a table with ``prompt``, ``type`` (the category) and ``label`` (safe or unsafe)."""
    records = read_records(path)
    require_columns(records, ["prompt", "type", "label"], path)
    prompts = _from_records(records, text_column="prompt", category_column="type", label_column="label")
    for record, prompt in zip(records, prompts):
        if prompt.label not in (SAFE, UNSAFE):
            raise DataError(f"{record.location}: label {prompt.label!r} is invalid; use 'safe' or 'unsafe'")
    return prompts


def load_nointentedit(path: Path) -> list[Prompt]:
    """Load NoIntentEdit: xlsx or a table with ``Cluster``, ``Question`` and ``Answer``; the category is the cluster."""
    records = read_records(path)
    require_columns(records, ["cluster", "question", "answer"], path)
    return _from_records(records, text_column="question", category_column="cluster")


def load_generic(
    path: Path, field: str | None = None, *, category_field: str | None = None, label_field: str | None = None
) -> list[Prompt]:
    """Load any table; ``field`` names the prompt column (default: the first of prompt, question, goal, instruction, text)."""
    records = read_records(path)
    if field is None:
        field = next((name for name in GENERIC_FIELDS if records and records[0].get(name) is not None), None)
        if field is None:
            found = ", ".join(sorted(records[0].fields)) if records else "no rows"
            raise DataError(f"{path}: no prompt column among {', '.join(GENERIC_FIELDS)} (found {found}); pass --field")
    require_columns(records, [field, *(name for name in (category_field, label_field) if name)], path)
    return _from_records(records, text_column=field, category_column=category_field, label_column=label_field)


LOADERS: dict[str, Callable[[Path], list[Prompt]]] = {
    "advbench": load_advbench,
    "dangerousqa": load_dangerousqa,
    "harmfulqa": load_harmfulqa,
    "nichehazardqa": load_nichehazardqa,
    "hexphi": load_hexphi,
    "xstest": load_xstest,
    "nointentedit": load_nointentedit,
}


def load_dataset(spec: str | os.PathLike[str], *, field: str | None = None) -> Dataset:
    """Load ``NAME=PATH`` or a bare ``PATH`` (the layout is guessed and the guess logged).

    A known NAME picks its loader; any other NAME reads the file with the
    generic loader, using ``field`` as the prompt column.
    """
    name, path = parse_dataset_spec(spec)
    if not path.exists():
        raise DataError(f"{path}: dataset file or folder not found")
    if name is None:
        loader_name = guess_layout(path)
        name = loader_name if loader_name != "generic" else path.stem
        logger.info("%s: guessed the %s layout from the file; name it (NAME=PATH) to choose another", path, loader_name)
    else:
        loader_name = name.lower() if name.lower() in LOADERS else "generic"

    if loader_name == "generic":
        prompts = load_generic(path, field)
    else:
        prompts = LOADERS[loader_name](path)
    if not prompts:
        raise DataError(f"{path}: the {loader_name} loader found no prompts")
    _check_unique_ids(prompts, path)
    return Dataset(name=name, path=path, loader=loader_name, prompts=prompts)


def parse_dataset_spec(spec: str | os.PathLike[str]) -> tuple[str | None, Path]:
    """Split ``NAME=PATH`` into its parts; a spec without ``=`` (or an existing path) has no name."""
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, _, path_text = text.partition("=")
        if not name.strip() or not path_text.strip():
            raise ConfigError(f"dataset {text!r} is invalid; use NAME=PATH or PATH")
        return name.strip(), Path(path_text.strip()).expanduser()
    return None, Path(text).expanduser()


def guess_layout(path: Path) -> str:
    """Return the loader name that fits the file's layout, or ``generic``."""
    if path.is_dir():
        return "hexphi"
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return "nointentedit"
    if suffix == ".json":
        payload = read_json(path)
        if isinstance(payload, list) and payload and all(isinstance(item, str) for item in payload):
            return "dangerousqa"
        if isinstance(payload, dict):
            return "harmfulqa"
    if suffix == ".csv":
        columns = set(csv_header(path))
        layout = _layout_from_columns(columns)
        if layout == "generic" and not columns & set(GENERIC_FIELDS):
            return "hexphi"
        return layout
    records = read_records(path)
    return _layout_from_columns(set(records[0].fields) if records else set())


def _layout_from_columns(columns: set[str]) -> str:
    if "goal" in columns:
        return "advbench"
    if {"prompt", "type", "label"} <= columns:
        return "xstest"
    if {"cluster", "question", "answer"} <= columns:
        return "nointentedit"
    if {"question", "domain"} <= columns:
        return "nichehazardqa"
    if {"topic", "subtopic", "question"} <= columns:
        return "harmfulqa"
    return "generic"


def _from_records(
    records: list[Record],
    *,
    text_column: str,
    category_column: str | None = None,
    label_column: str | None = None,
    label: str | None = None,
) -> list[Prompt]:
    prompts = []
    for index, record in enumerate(records):
        identifier = record.get("id")
        category = record.get(category_column) if category_column else None
        row_label = required_text(record, label_column).lower() if label_column else label
        prompts.append(Prompt(
            id=str(identifier).strip() if identifier not in (None, "") else str(index),
            text=required_text(record, text_column),
            category=str(category).strip() if category not in (None, "") else None,
            label=row_label,
        ))
    return prompts


def _check_unique_ids(prompts: list[Prompt], path: Path) -> None:
    seen: set[str] = set()
    for prompt in prompts:
        if prompt.id in seen:
            raise DataError(f"{path}: prompt id {prompt.id!r} occurs twice; ids must be unique within a dataset")
        seen.add(prompt.id)
