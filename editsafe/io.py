"""Atomic writes, JSON Lines reading with line numbers, and file hashing.

Every file editsafe writes goes through a temporary file in the destination
folder followed by :func:`os.replace`, so a killed process leaves either the
old file or the new one, never a truncated file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from editsafe.errors import DataError, MissingDependencyError

_HASH_CHUNK_BYTES = 1 << 22


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it into place on success.

    The caller writes the file at the yielded path. When the block raises, the
    temporary file is deleted and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    # mkstemp creates the file readable by its owner only; give it the mode a plain open() would.
    os.chmod(temporary_path, 0o666 & ~_current_umask())
    try:
        yield temporary_path
        os.replace(temporary_path, target)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one record to a JSON Lines file and flush it to disk.

    Appending a single line is the resume mechanism for long runs: a crash can
    at worst leave a partial last line, which :func:`read_jsonl` with
    ``skip_partial_last=True`` ignores.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=_json_default) + "\n"
    with open(target, "a", encoding="utf-8") as stream:
        stream.write(line)
        stream.flush()
        os.fsync(stream.fileno())


def read_jsonl(path: str | os.PathLike[str], *, skip_partial_last: bool = False) -> list[dict[str, Any]]:
    """Read a JSON Lines file whose lines are objects; blank lines are skipped.

    Raises :class:`DataError` naming ``file:line`` for a line that is not valid
    JSON or not an object. With ``skip_partial_last`` a malformed final line
    without a newline (an interrupted append) is dropped instead.
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"{source}: file not found")
    text = source.read_text(encoding="utf-8")
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            is_last = number == len(lines) and not text.endswith("\n")
            if skip_partial_last and is_last:
                break
            raise DataError(f"{source}:{number}: invalid JSON ({error.msg}); fix or remove this line") from error
        if not isinstance(record, dict):
            raise DataError(f"{source}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def read_json(path: str | os.PathLike[str], *, error_type: type[Exception] = DataError) -> Any:
    """Parse a JSON file, raising ``error_type`` that names the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as error:
        raise error_type(f"{path}: invalid JSON ({error})") from error


def read_xlsx_rows(path: str | os.PathLike[str]) -> list[tuple[Any, ...]]:
    """Return every row of an .xlsx workbook's first sheet as a tuple of cell values (header included)."""
    try:
        import openpyxl
    except ImportError as error:
        raise MissingDependencyError("reading .xlsx files needs openpyxl: pip install openpyxl") from error
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # noqa: BLE001 - openpyxl raises zipfile, KeyError and its own errors
        raise DataError(f"{path}: not a readable .xlsx workbook ({error})") from error
    try:
        sheet = workbook.worksheets[0]
        return [tuple(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(payload: Any) -> str:
    """Return the hex SHA-256 of a canonical JSON encoding of ``payload``."""
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")
