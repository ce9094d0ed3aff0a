"""Streaming access to the tensors of a model reference, one tensor at a time.

A :class:`TensorSource` lists the names, shapes and dtypes stored in a model's
safetensors files and reads single tensors on request, so a caller can walk a
7B model while holding only the tensor it works on. For an edit folder the
patched weights are computed on read as W + ΔW (float32 arithmetic, stored
back in W's dtype, one patch after the other exactly as
:func:`editsafe.models.patches.apply_patch` does), so θ_edit is never built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any

import torch

from editsafe.errors import ConfigError, ModelReferenceError, NumericalError, ProvenanceError
from editsafe.io import read_json
from editsafe.models.architectures import Architecture, architecture_for, num_layers
from editsafe.models.patches import RankOnePatch, load_patches
from editsafe.models.refs import PATCH_FILE_NAME, ResolvedModel
from editsafe.models.safetensors_file import SafetensorsReader

INDEX_FILE_NAME = "model.safetensors.index.json"
SINGLE_FILE_NAME = "model.safetensors"

FLOAT_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16})


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape, dtype and file of one stored tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


def weight_files(folder: Path) -> list[Path]:
    """Return the safetensors weight files of a Hugging Face folder, in index order when sharded."""
    index = folder / INDEX_FILE_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError) as error:
            raise ModelReferenceError(f"{index}: not a valid safetensors index ({error})") from error
        return [folder / name for name in dict.fromkeys(weight_map.values())]
    if (folder / SINGLE_FILE_NAME).is_file():
        return [folder / SINGLE_FILE_NAME]
    files = sorted(path for path in folder.glob("*.safetensors") if path.name != PATCH_FILE_NAME)
    if not files:
        raise ModelReferenceError(
            f"{folder}: no *.safetensors weights found; editsafe reads weights only from safetensors "
            "(convert .bin checkpoints with transformers' save_pretrained(safe_serialization=True))"
        )
    return files


class TensorSource:
    """Read-only, tensor-at-a-time view of the weights of a resolved model reference.

    Use it as a context manager: the safetensors files stay open until the block
    ends. Reads use plain file reads, not memory maps (see
    :mod:`editsafe.models.safetensors_file`). ``names`` lists the stored tensors in file order. A
    tied output head that the files leave out is not listed; ``tied_head``
    names it and ``tied_to`` the embedding it shares.
    """

    def __init__(self, resolved: ResolvedModel) -> None:
        self.resolved = resolved
        self.folder = Path(resolved.weights_folder)
        self.config: dict[str, Any] = _read_config(self.folder)
        self.architecture: Architecture = architecture_for(str(self.config.get("model_type")))
        self.num_layers: int = _config_num_layers(self.config, self.folder)
        self.files = weight_files(self.folder)
        self._infos: dict[str, TensorInfo] = {}
        self._readers: dict[Path, SafetensorsReader] = {}
        self._patches: dict[str, list[RankOnePatch]] = {}

        for file in self.files:
            reader = SafetensorsReader(file)
            self._readers[file] = reader
            for name, stored in sorted(reader.tensors.items(), key=lambda item: item[1].start):
                self._infos[name] = TensorInfo(name, stored.shape, stored.dtype, file)

        if resolved.kind == "edit":
            assert resolved.artefact_folder is not None
            for patch in load_patches(resolved.artefact_folder / PATCH_FILE_NAME):
                self._check_patch(patch)
                self._patches.setdefault(patch.weight_name, []).append(patch)

        head = f"{self.architecture.lm_head_module}.weight"
        embedding = f"{self.architecture.embedding_modules[0]}.weight"
        tied = bool(self.config.get("tie_word_embeddings", self.architecture.model_type == "gpt2"))
        self.tied_head: str | None = head if tied and head not in self._infos else None
        self.tied_to: str | None = embedding if self.tied_head else None

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the safetensors files."""
        for reader in self._readers.values():
            reader.close()

    @property
    def names(self) -> list[str]:
        """Names of the stored tensors, in file order."""
        return list(self._infos)

    @property
    def patched_names(self) -> set[str]:
        """Names of the tensors that an edit folder's patches change."""
        return set(self._patches)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def info(self, name: str) -> TensorInfo:
        """Return the stored name, shape, dtype and file of ``name``."""
        try:
            return self._infos[name]
        except KeyError:
            raise ProvenanceError(f"{self.resolved.reference}: no tensor named {name!r} in {self.folder}") from None

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor in its stored dtype (patched when the reference is an edit)."""
        info = self.info(name)
        tensor = self._readers[info.file].read(name)
        for patch in self._patches.get(name, []):
            delta = patch.delta(torch.float32)
            updated = tensor.to(torch.float32) + delta
            if not torch.isfinite(updated).all():
                raise NumericalError(f"patch for {name} gives NaN or infinite weights")
            tensor = updated.to(info.dtype)
        return tensor

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Read rows ``start:stop`` along the first dimension (patched when the reference is an edit).

        A tensor of fewer than one dimension is returned whole. Rows of a
        patched weight equal the same rows of :meth:`get`.
        """
        info = self.info(name)
        if len(info.shape) == 0:
            return self.get(name)
        tensor = self._readers[info.file].read(name, start, stop)
        for patch in self._patches.get(name, []):
            u = patch.u.to(torch.float32)
            right = patch.right.to(torch.float32)
            delta = torch.outer(u[start:stop], right) if patch.transposed else torch.outer(right[start:stop], u)
            updated = tensor.to(torch.float32) + delta
            if not torch.isfinite(updated).all():
                raise NumericalError(f"patch for {name} gives NaN or infinite weights")
            tensor = updated.to(info.dtype)
        return tensor

    def byte_range(self, name: str) -> tuple[Path, int, int]:
        """Return (file, start, stop) of the stored bytes of an unpatched tensor."""
        info = self.info(name)
        if name in self._patches:
            raise ProvenanceError(f"{name} is patched by the edit; its stored bytes are not θ_edit")
        stored = self._readers[info.file].tensors[name]
        return info.file, stored.start, stored.stop

    def shard_layout(self) -> dict[str, list[str]]:
        """Return file name -> tensor names in that file, in file order."""
        layout: dict[str, list[str]] = {file.name: [] for file in self.files}
        for info in self._infos.values():
            layout[info.file.name].append(info.name)
        return layout

    def _check_patch(self, patch: RankOnePatch) -> None:
        info = self._infos.get(patch.weight_name)
        if info is None:
            raise ProvenanceError(
                f"{self.resolved.reference}: a patch targets {patch.weight_name!r}, which the base model "
                f"in {self.folder} does not have"
            )
        delta_shape = (patch.u.numel(), patch.right.numel()) if patch.transposed else (patch.right.numel(), patch.u.numel())
        if delta_shape != info.shape:
            raise ProvenanceError(
                f"{self.resolved.reference}: the patch for {patch.weight_name} has shape {delta_shape}, "
                f"the base weight has {info.shape}"
            )


def row_chunks(shape: tuple[int, ...], max_elements: int) -> list[tuple[int, int]]:
    """Split the first dimension into (start, stop) blocks of at most ``max_elements`` elements.

    A 0-d tensor is one block (0, 0); a row larger than ``max_elements`` gets a block of its own.
    """
    if len(shape) == 0:
        return [(0, 0)]
    row_elements = 1
    for size in shape[1:]:
        row_elements *= size
    rows_per_block = max(1, max_elements // max(row_elements, 1))
    return [(start, min(start + rows_per_block, shape[0])) for start in range(0, shape[0], rows_per_block)] or [(0, 0)]


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelReferenceError(f"{folder}: no config.json; a model folder needs one to name its architecture")
    config = read_json(path, error_type=ModelReferenceError)
    if not isinstance(config, dict):
        raise ModelReferenceError(f"{path}: expected a JSON object")
    return config


def _config_num_layers(config: dict[str, Any], folder: Path) -> int:
    try:
        return num_layers(SimpleNamespace(**config))
    except ConfigError as error:
        raise ModelReferenceError(f"{folder}/config.json: {error}") from error
