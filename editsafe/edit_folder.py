"""One edit folder of an ``editsafe edit`` run: written atomically, read back on resume.

An edit folder ``OUT/edits/<id>/`` contains ``editsafe.json`` (kind
``rome-edit``: the request, base model provenance, layer, hyperparameters,
metrics, timings) and ``delta.safetensors`` (every rank-one patch that turns
the base into this edited model), and with materialisation the whole edited
model in Hugging Face format under ``model/``. :func:`editsafe.resolve_model`
reads such a folder as a model reference.

The folder is built under a temporary name beside its final place and renamed
into place once every file is written, so a folder named after an edit id is
always complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from editsafe.errors import DataError, OutputExistsError
from editsafe.io import write_json_atomic
from editsafe.models.patches import RankOnePatch, save_patches
from editsafe.models.refs import EDIT_KIND, MANIFEST_NAME, PATCH_FILE_NAME

logger = logging.getLogger(__name__)

MATERIALIZED_FOLDER = "model"
TEMPORARY_PREFIX = ".tmp-"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_edit_id(identifier: str) -> str:
    """Return ``identifier`` when it is usable as a folder name, else raise :class:`DataError`."""
    if not _SAFE_ID.match(identifier) or len(identifier) > 128:
        raise DataError(
            f"edit id {identifier!r} cannot name an edit folder; use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return identifier


def is_complete(folder: Path, *, materialize: bool) -> bool:
    """Return True when ``folder`` is a finished edit folder (with ``model/`` when materialising)."""
    manifest = read_edit_manifest(folder)
    if manifest is None or not (folder / PATCH_FILE_NAME).is_file():
        return False
    return not materialize or (folder / MATERIALIZED_FOLDER / "config.json").is_file()


def read_edit_manifest(folder: Path) -> dict[str, Any] | None:
    """Return the ``editsafe.json`` of an edit folder, or None when it is missing or not an edit."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        logger.warning("%s: invalid JSON; the edit will be redone", path)
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == EDIT_KIND else None


@contextmanager
def staged_folder(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``final`` and rename it to ``final`` when the block succeeds.

    When the block raises, the temporary folder is deleted and ``final`` is
    left as it was. An existing ``final`` is an error unless ``replace`` is set,
    in which case it is removed just before the rename.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{final.name}.", dir=final.parent))
    # mkdtemp creates the folder readable by its owner alone; a finished edit folder is shared like any output.
    os.chmod(staging, 0o755)
    try:
        yield staging
        if final.exists():
            if not replace:
                raise OutputExistsError(f"{final} already exists")
            shutil.rmtree(final)
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(parent: Path) -> None:
    """Delete temporary folders that an interrupted run left in ``parent``."""
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        if entry.name.startswith(TEMPORARY_PREFIX) and entry.is_dir():
            logger.info("removing %s, left by an interrupted run", entry)
            shutil.rmtree(entry, ignore_errors=True)


def write_edit_folder(
    final: Path,
    record: dict[str, Any],
    patches: list[RankOnePatch],
    *,
    model: Any | None = None,
    tokenizer: Any | None = None,
) -> None:
    """Write ``editsafe.json``, ``delta.safetensors`` and, given a model, ``model/``, then move them into place."""
    with staged_folder(final, replace=True) as staging:
        save_patches(staging / PATCH_FILE_NAME, patches)
        if model is not None:
            materialized = staging / MATERIALIZED_FOLDER
            model.save_pretrained(materialized, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(materialized)
        # The manifest goes last: a folder with a valid editsafe.json has everything else.
        write_json_atomic(staging / MANIFEST_NAME, record)
