"""The in-context safety vector as an artefact: per-layer unit segments plus metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from editsafe.errors import DataError, NumericalError
from editsafe.io import atomic_path, read_json, write_json_atomic

# A safe-model folder keeps the vector in this subfolder, so that weight loaders and hashes that read
# every top-level *.safetensors file see the weights alone.
ICV_SUBFOLDER = "icv"
VECTOR_FILE_NAME = "icv.safetensors"
METADATA_FILE_NAME = "icv.json"


@dataclass
class SafetyVector:
    """An in-context safety vector: one unit vector û_l per decoder layer l of the region.

    ``explained_variance`` is the share of the stacked differences' total
    (uncentred) second moment along the chosen direction, sum(⟨v, d_i⟩²) / sum(||d_i||²),
    for both methods, so a value near 1 means the pairs agree on one direction.
    """

    layers: tuple[int, ...]
    segments: dict[int, torch.Tensor]
    method: str
    token: str
    site: str
    n_pairs: int
    demos_hash: str
    explained_variance: float
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = tuple(sorted(int(layer) for layer in self.layers))
        if set(self.layers) != set(self.segments):
            raise DataError(f"safety vector layers {list(self.layers)} differ from its segments {sorted(self.segments)}")
        for layer, segment in self.segments.items():
            if segment.ndim != 1:
                raise DataError(f"safety vector segment of layer {layer} has shape {tuple(segment.shape)}, expected 1-D")
            if not torch.isfinite(segment).all():
                raise NumericalError(f"safety vector segment of layer {layer} is not finite")

    @property
    def hidden_size(self) -> int:
        """The width of every segment (the model's hidden size)."""
        return int(next(iter(self.segments.values())).numel())

    def metadata(self) -> dict[str, Any]:
        """Return the JSON-ready description of the vector (everything except the tensors)."""
        return {
            "layers": list(self.layers),
            "method": self.method,
            "token": self.token,
            "site": self.site,
            "n_pairs": self.n_pairs,
            "demos_hash": self.demos_hash,
            "explained_variance": self.explained_variance,
            "hidden_size": self.hidden_size,
            **self.extra,
        }

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``icv.safetensors`` (one tensor per layer) and ``icv.json`` into ``folder`` atomically."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        tensors = {f"layer.{layer}": self.segments[layer].detach().to("cpu", torch.float32).contiguous()
                   for layer in self.layers}
        with atomic_path(target / VECTOR_FILE_NAME) as temporary:
            save_file(tensors, str(temporary), metadata={"format": "pt"})
        write_json_atomic(target / METADATA_FILE_NAME, self.metadata())
        return target

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> SafetyVector:
        """Read a vector written by :meth:`save`."""
        source = Path(folder)
        tensor_path, metadata_path = source / VECTOR_FILE_NAME, source / METADATA_FILE_NAME
        for path in (tensor_path, metadata_path):
            if not path.is_file():
                raise DataError(f"{path}: missing; a safety vector folder needs {VECTOR_FILE_NAME} and {METADATA_FILE_NAME}")
        metadata = read_json(metadata_path)
        tensors = load_file(str(tensor_path))
        segments = {int(name.split(".", 1)[1]): tensor for name, tensor in tensors.items()}
        known = {"layers", "method", "token", "site", "n_pairs", "demos_hash", "explained_variance", "hidden_size"}
        try:
            return cls(
                layers=tuple(metadata["layers"]), segments=segments, method=metadata["method"],
                token=metadata["token"], site=metadata.get("site", "layer"), n_pairs=int(metadata["n_pairs"]),
                demos_hash=metadata["demos_hash"], explained_variance=float(metadata["explained_variance"]),
                extra={key: value for key, value in metadata.items() if key not in known},
            )
        except KeyError as error:
            raise DataError(f"{metadata_path}: missing field {error.args[0]!r}") from None
