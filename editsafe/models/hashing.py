"""Content hashes that identify a model's weights in every artefact.

A single-file model is identified by the SHA-256 of its ``model.safetensors``;
a sharded model by the SHA-256 of the sorted (shard name, shard SHA-256)
pairs. Hashes are cached on disk by absolute path, size and modification
time, because hashing a 7B model takes minutes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from editsafe.errors import ModelReferenceError
from editsafe.io import sha256_file, write_json_atomic
from editsafe.paths import editsafe_home

logger = logging.getLogger(__name__)


def safetensors_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Return the sorted safetensors weight files of a Hugging Face model folder."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ModelReferenceError(
            f"{folder}: no *.safetensors weights found; editsafe reads weights only from safetensors "
            "(convert .bin checkpoints with transformers' save_pretrained(safe_serialization=True))"
        )
    return files


def weights_hash(folder: str | os.PathLike[str]) -> str:
    """Return the content hash of the safetensors weights in ``folder``."""
    files = safetensors_files(folder)
    if len(files) == 1:
        return _cached_file_hash(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{_cached_file_hash(file)}\n".encode())
    return digest.hexdigest()


def _cached_file_hash(path: Path) -> str:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    cache_file = editsafe_home() / "hashes" / f"{key}.json"
    if cache_file.is_file():
        try:
            return str(json.loads(cache_file.read_text())["sha256"])
        except (OSError, ValueError, KeyError):
            logger.debug("ignoring unreadable hash cache entry %s", cache_file)
    value = sha256_file(path)
    try:
        write_json_atomic(cache_file, {"path": str(path.resolve()), "sha256": value})
    except OSError as error:
        logger.debug("could not cache the hash of %s: %s", path, error)
    return value
