"""A safetensors writer that streams tensors to disk one at a time.

``safetensors.torch.save_file`` needs every tensor of a file in memory at
once. This writer takes the names, dtypes and shapes up front, writes the
header, then appends each tensor's bytes as it arrives, so writing a 5 GB
shard needs memory for one tensor only. The files it writes are ordinary
safetensors files (little-endian header length, JSON header padded with
spaces to a multiple of 8, then the raw data in header order).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from types import TracebackType
from collections.abc import Iterable
from typing import BinaryIO

import torch

from editsafe.errors import ProvenanceError
from editsafe.models.safetensors_file import TORCH_TO_SAFETENSORS


class StreamingSafetensorsWriter:
    """Write one safetensors file whose tensors are given in a fixed order.

    ``entries`` lists ``(name, dtype, shape)`` in the order the tensors will be
    written. :meth:`write` checks each tensor against its entry; :meth:`close`
    checks that every entry was written. Use it on a temporary path (see
    :func:`editsafe.io.atomic_path`): an unfinished file is not valid.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        entries: list[tuple[str, torch.dtype, tuple[int, ...]]],
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._entries = entries
        self._position = 0
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = dict(metadata)
        offset = 0
        for name, dtype, shape in entries:
            size = _numel(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": TORCH_TO_SAFETENSORS[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)
        self._stream: BinaryIO = open(self.path, "wb")
        self._stream.write(struct.pack("<Q", len(encoded)))
        self._stream.write(encoded)

    def __enter__(self) -> StreamingSafetensorsWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._stream.close()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next tensor; its name, dtype and shape must match the next entry."""
        if self._position >= len(self._entries):
            raise ProvenanceError(f"{self.path}: tensor {name} was not declared for this file")
        expected_name, dtype, shape = self._entries[self._position]
        if name != expected_name or tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise ProvenanceError(
                f"{self.path}: expected {expected_name} {TORCH_TO_SAFETENSORS[dtype]} {tuple(shape)} next, "
                f"got {name} {tensor.dtype} {tuple(tensor.shape)}"
            )
        data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
        self._stream.write(memoryview(data))
        self._position += 1

    def write_blocks(self, name: str, blocks: Iterable[torch.Tensor]) -> None:
        """Append the next tensor as consecutive row blocks (dim 0), so it is never whole in memory."""
        if self._position >= len(self._entries):
            raise ProvenanceError(f"{self.path}: tensor {name} was not declared for this file")
        expected_name, dtype, shape = self._entries[self._position]
        if name != expected_name:
            raise ProvenanceError(f"{self.path}: expected {expected_name} next, got {name}")
        written = 0
        for block in blocks:
            if block.dtype != dtype or tuple(block.shape[1:]) != tuple(shape[1:]):
                raise ProvenanceError(
                    f"{self.path}: a block of {name} is {block.dtype} {tuple(block.shape)}, "
                    f"expected {TORCH_TO_SAFETENSORS[dtype]} rows of {tuple(shape)}"
                )
            self._stream.write(memoryview(block.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()))
            written += block.numel()
        if written != _numel(tuple(shape)):
            raise ProvenanceError(f"{self.path}: {name} got {written} elements, expected {_numel(tuple(shape))}")
        self._position += 1

    def copy_bytes(self, name: str, file: Path, start: int, stop: int, *, chunk_bytes: int = 1 << 22) -> None:
        """Append the next tensor by copying its stored bytes from another safetensors file.

        The bytes are copied unchanged, so the tensor is bit-identical to its source.
        """
        if self._position >= len(self._entries):
            raise ProvenanceError(f"{self.path}: tensor {name} was not declared for this file")
        expected_name, dtype, shape = self._entries[self._position]
        expected_size = _numel(tuple(shape)) * torch.empty((), dtype=dtype).element_size()
        if name != expected_name or stop - start != expected_size:
            raise ProvenanceError(
                f"{self.path}: expected {expected_name} ({expected_size} bytes) next, got {name} ({stop - start} bytes)"
            )
        with open(file, "rb") as source:
            source.seek(start)
            remaining = stop - start
            while remaining > 0:
                chunk = source.read(min(chunk_bytes, remaining))
                if not chunk:
                    raise ProvenanceError(f"{file}: ended before the bytes of {name}; the file is truncated")
                self._stream.write(chunk)
                remaining -= len(chunk)
        self._position += 1

    def close(self) -> None:
        """Flush to disk and check that every declared tensor was written."""
        if self._stream.closed:
            return
        missing = [name for name, _, _ in self._entries[self._position:]]
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        if missing:
            raise ProvenanceError(f"{self.path}: {len(missing)} declared tensors were not written, first {missing[0]}")


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count
