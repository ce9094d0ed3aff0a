"""The harm vector τ_H = θ_H − θ_base: stored on disk, or computed from two models on read.

A harm-vector folder contains float32 safetensors files with one tensor per
trained or changed parameter (other parameters are absent, so their τ_H is
zero) and ``harm.json``: the base model's provenance and content hash,
the settings and data hash of the fine-tune, and ``weight_map`` (tensor name
-> file). Both kinds of harm vector read tensors, or row blocks of them, in
float32 one at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import torch

from editsafe.errors import ModelReferenceError, ProvenanceError
from editsafe.io import atomic_path, read_json, write_json_atomic
from editsafe.models.refs import ResolvedModel
from editsafe.models.safetensors_file import SafetensorsReader
from editsafe.models.tensors import TensorSource, row_chunks
from editsafe.models.writer import StreamingSafetensorsWriter

logger = logging.getLogger(__name__)

HARM_MANIFEST_NAME = "harm.json"
HARM_KIND = "harm-vector"
# Files of a stored harm vector are split at about this many bytes.
HARM_SHARD_BYTES = 2 * 1024**3


class HarmVector(Protocol):
    """Interface through which HDR reads a harm vector, stored or computed."""

    base_hash: str
    names: list[str]

    def shape(self, name: str) -> tuple[int, ...]: ...

    def get(self, name: str) -> torch.Tensor: ...

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor: ...

    def provenance(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class StoredHarmVector:
    """A harm vector read lazily from a harm-vector folder (see :func:`load_harm_vector`).

    Nothing is read until :meth:`get` or :meth:`get_rows` asks for a tensor.
    ``settings``, ``base_hash`` and ``manifest`` come from ``harm.json``.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest
        self.settings: dict[str, Any] = dict(manifest.get("settings") or {})
        self.base_hash: str = str(manifest["base"]["hash"])
        self.weight_map: dict[str, str] = dict(manifest["weight_map"])
        self.names = list(self.weight_map)
        self._readers: dict[str, SafetensorsReader] = {}

    def __enter__(self) -> StoredHarmVector:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _reader(self, name: str) -> SafetensorsReader:
        if name not in self.weight_map:
            raise ProvenanceError(f"{self.folder}: the harm vector has no tensor {name!r}")
        file = self.weight_map[name]
        if file not in self._readers:
            self._readers[file] = SafetensorsReader(self.folder / file)
        return self._readers[file]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._reader(name).tensors[name].shape

    def get(self, name: str) -> torch.Tensor:
        """Read τ_H of one parameter in float32."""
        return self._reader(name).read(name).to(torch.float32)

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Read rows ``start:stop`` of τ_H of one parameter in float32 (a 0-d tensor whole)."""
        return self._reader(name).read(name, start, stop).to(torch.float32)

    @property
    def tensors(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every stored tensor (the values are read with :meth:`get`)."""
        return {name: self.shape(name) for name in self.names}

    def provenance(self) -> dict[str, Any]:
        return {
            "path": str(self.folder.resolve()), "kind": HARM_KIND, "base_hash": self.base_hash,
            "source": self.manifest.get("source"), "settings": self.settings,
        }

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


class ModelDifferenceHarmVector:
    """τ_H = θ_H − θ_base computed tensor by tensor from two open models (float32 arithmetic)."""

    def __init__(self, base: TensorSource, harmful: TensorSource) -> None:
        self.base = base
        self.harmful = harmful
        self.base_hash = base.resolved.content_hash
        self.names = [name for name in harmful.names if harmful.info(name).is_float]
        for name in self.names:
            if name not in base:
                raise ProvenanceError(f"tensor {name} is in the harmful model but not in the base model")
            if base.info(name).shape != harmful.info(name).shape:
                raise ProvenanceError(
                    f"tensor {name} has shape {base.info(name).shape} in the base model and "
                    f"{harmful.info(name).shape} in the harmful model"
                )

    def shape(self, name: str) -> tuple[int, ...]:
        return self.harmful.info(name).shape

    def get(self, name: str) -> torch.Tensor:
        return self.harmful.get(name).to(torch.float32) - self.base.get(name).to(torch.float32)

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        harmful = self.harmful.get_rows(name, start, stop).to(torch.float32)
        return harmful - self.base.get_rows(name, start, stop).to(torch.float32)

    def provenance(self) -> dict[str, Any]:
        return {
            "kind": "model-difference", "base_hash": self.base_hash,
            "harmful": self.harmful.resolved.provenance(), "base": self.base.resolved.provenance(),
        }

    def close(self) -> None:
        self.base.close()
        self.harmful.close()


def check_harm_base(harm: HarmVector, base: ResolvedModel) -> None:
    """Raise :class:`ProvenanceError` when ``harm`` was computed for another base than ``base``."""
    if harm.base_hash != base.content_hash:
        raise ProvenanceError(
            f"the harm vector was computed for a base with hash {harm.base_hash}, but {base.reference} "
            f"has hash {base.content_hash}; recompute the harm vector for this base"
        )


def is_harm_vector_folder(path: str | os.PathLike[str]) -> bool:
    """Return True when ``path`` is a folder with a ``harm.json``."""
    return (Path(path) / HARM_MANIFEST_NAME).is_file()


def load_harm_vector(folder: str | os.PathLike[str]) -> StoredHarmVector:
    """Open a harm-vector folder written by ``editsafe harm``; tensors are read lazily."""
    path = Path(folder)
    manifest_path = path / HARM_MANIFEST_NAME
    if not manifest_path.is_file():
        raise ModelReferenceError(f"{path}: not a harm-vector folder (no {HARM_MANIFEST_NAME}); run `editsafe harm` first")
    manifest = read_json(manifest_path, error_type=ModelReferenceError)
    if manifest.get("kind") != HARM_KIND or "weight_map" not in manifest or "hash" not in (manifest.get("base") or {}):
        raise ModelReferenceError(
            f"{manifest_path}: expected kind {HARM_KIND!r} with base.hash and weight_map; "
            "the folder was not written by editsafe harm"
        )
    for file in set(manifest["weight_map"].values()):
        if not (path / file).is_file():
            raise ModelReferenceError(f"{path}: harm-vector file {file} is missing; recompute the harm vector")
    return StoredHarmVector(path, manifest)


def write_harm_vector(
    folder: Path,
    names: list[str],
    shapes: dict[str, tuple[int, ...]],
    read_rows: Callable[[str, int, int], torch.Tensor],
    manifest: dict[str, Any],
    *,
    max_block_elements: int = 1 << 20,
) -> dict[str, str]:
    """Write τ_H tensors (float32) streamed block by block, then ``harm.json`` last.

    ``read_rows(name, start, stop)`` returns rows of τ_H in float32. Each file
    is written atomically and ``harm.json`` is written only after every file is
    in place, so a folder with a ``harm.json`` is complete. Returns the weight map.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[list[str]] = [[]]
    shard_bytes = 0
    for name in names:
        size = 4 * _numel(shapes[name])
        if shards[-1] and shard_bytes + size > HARM_SHARD_BYTES:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(name)
        shard_bytes += size

    weight_map: dict[str, str] = {}
    for index, shard in enumerate(shards, start=1):
        file_name = "harm_vector.safetensors" if len(shards) == 1 else f"harm-{index:05d}-of-{len(shards):05d}.safetensors"
        entries = [(name, torch.float32, shapes[name]) for name in shard]
        with atomic_path(folder / file_name) as temporary:
            with StreamingSafetensorsWriter(temporary, entries, {"format": "pt"}) as writer:
                for name in shard:
                    blocks = (
                        read_rows(name, start, stop).to(torch.float32)
                        for start, stop in row_chunks(shapes[name], max_block_elements)
                    )
                    writer.write_blocks(name, blocks)
        weight_map.update({name: file_name for name in shard})

    write_json_atomic(folder / HARM_MANIFEST_NAME, {**manifest, "kind": HARM_KIND, "weight_map": weight_map})
    return weight_map


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count
