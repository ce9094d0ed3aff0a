"""Edit retention: does a knowledge edit survive a repair?

The edit request is read from an edit folder's ``editsafe.json``. The same
edit metrics (efficacy, generalisation, locality; see
:mod:`editsafe.edit_metrics`) are measured on each model, so the original
edited model gives the "before" figures and each repaired variant the
"after" figures. ``retention`` is the after/before ratio of the efficacy
target probability (1 means the repair left the edit's strength unchanged).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from editsafe.errors import DataError
from editsafe.evaluation.readers import read_json


def edit_request_from_folder(folder: str | os.PathLike[str]) -> Any:
    """Return the :class:`~editsafe.rome.EditRequest` stored in an edit folder's ``editsafe.json``."""
    from editsafe.rome import EditRequest

    manifest_path = Path(folder) / "editsafe.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: not found; give an edit folder written by editsafe edit")
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("request"), dict):
        raise DataError(f"{manifest_path}: no 'request' object; is this an edit folder?")
    return EditRequest.from_dict(manifest["request"], source=f"{manifest_path}: request")


def measure_edit(
    model: Any, tokenizer: Any, request: Any, *, reference_predictions: list[list[int]] | None = None
) -> dict[str, Any]:
    """Return the edit metrics of ``model`` for ``request`` (locality agreement needs the base's predictions)."""
    from editsafe.edit_metrics import edit_metrics

    return edit_metrics(model, tokenizer, request, reference_predictions=reference_predictions)


def add_retention(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Return ``after`` with ``retention``: its efficacy target probability over that of ``before``."""
    before_probability = before["efficacy"]["target_probability"]
    after_probability = after["efficacy"]["target_probability"]
    retention = after_probability / before_probability if before_probability > 0 else None
    return {**after, "retention": retention}
