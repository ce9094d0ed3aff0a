"""Reading tensors and row blocks from a safetensors file with plain file reads.

``safetensors.safe_open`` memory-maps the file. Every page it touches then
counts towards the process's resident set until the mapping closes, so
walking a 13 GB checkpoint would show up as gigabytes of resident memory.
This reader parses the header itself and reads each requested byte range with
``os.pread``. The data passes through the page cache, which does not count
towards the process's memory.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from editsafe.errors import ModelReferenceError, ProvenanceError

# safetensors dtype codes -> torch dtypes (the subset transformers checkpoints use).
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
TORCH_TO_SAFETENSORS: dict[torch.dtype, str] = {value: key for key, value in SAFETENSORS_DTYPES.items()}
# Headers larger than this are rejected as corrupt (the format's own limit is 100 MB).
_MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class StoredTensor:
    """Dtype, shape and absolute byte range of one tensor in a safetensors file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    stop: int


class SafetensorsReader:
    """Read whole tensors or row blocks of one safetensors file; call :meth:`close` when done."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._descriptor = os.open(self.path, os.O_RDONLY)
        try:
            self.tensors, self.metadata = self._read_header()
        except BaseException:
            os.close(self._descriptor)
            raise

    def _read_header(self) -> tuple[dict[str, StoredTensor], dict[str, str]]:
        prefix = os.pread(self._descriptor, 8, 0)
        if len(prefix) != 8:
            raise ModelReferenceError(f"{self.path}: not a safetensors file (shorter than 8 bytes)")
        length = struct.unpack("<Q", prefix)[0]
        if length > _MAX_HEADER_BYTES:
            raise ModelReferenceError(f"{self.path}: not a safetensors file (header length {length})")
        try:
            header = json.loads(os.pread(self._descriptor, length, 8))
        except ValueError as error:
            raise ModelReferenceError(f"{self.path}: invalid safetensors header ({error})") from error
        metadata = header.pop("__metadata__", None) or {}
        tensors: dict[str, StoredTensor] = {}
        for name, entry in header.items():
            code = entry.get("dtype")
            if code not in SAFETENSORS_DTYPES:
                raise ModelReferenceError(f"{self.path}: tensor {name} has unsupported dtype {code}")
            begin, end = (int(offset) for offset in entry["data_offsets"])
            tensors[name] = StoredTensor(SAFETENSORS_DTYPES[code], tuple(int(size) for size in entry["shape"]), 8 + length + begin, 8 + length + end)
        return tensors, dict(metadata)

    def close(self) -> None:
        """Close the file descriptor."""
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """Read a tensor, or rows ``start:stop`` along its first dimension (a 0-d tensor is read whole)."""
        stored = self.tensors.get(name)
        if stored is None:
            raise ProvenanceError(f"{self.path}: no tensor named {name!r}")
        shape = stored.shape
        first, last = stored.start, stored.stop
        if shape and (start is not None or stop is not None):
            begin_row = max(0, min(start or 0, shape[0]))
            end_row = max(begin_row, min(shape[0] if stop is None else stop, shape[0]))
            row_bytes = (stored.stop - stored.start) // shape[0] if shape[0] else 0
            first, last = stored.start + begin_row * row_bytes, stored.start + end_row * row_bytes
            shape = (end_row - begin_row, *shape[1:])
        if last == first:
            return torch.empty(shape, dtype=stored.dtype)
        buffer = bytearray(last - first)
        view = memoryview(buffer)
        position = 0
        while position < len(buffer):
            count = os.preadv(self._descriptor, [view[position:]], first + position)
            if count == 0:
                raise ModelReferenceError(f"{self.path}: ended inside tensor {name}; the file is truncated")
            position += count
        return torch.frombuffer(buffer, dtype=stored.dtype).reshape(shape)
