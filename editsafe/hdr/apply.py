"""Harm Direction Removal: θ_int = θ_t − λ · trim_k(mask_R(τ_H)), streamed tensor by tensor.

Safety Arithmetic (Hazra et al., 2024, arXiv 2406.11801) removes the harm
direction from the target's weights: τ_H is masked to the region R, trimmed to
its top k% entries by magnitude (TIES, see :mod:`editsafe.hdr.trim`) and
subtracted λ times. Everything is read from and written to safetensors one row
block at a time, so peak memory stays near one block (``max_block_elements``
float32 values times a few temporaries), not the model.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from editsafe import __version__
from editsafe.errors import ConfigError, NumericalError, OutputExistsError, ProvenanceError
from editsafe.hdr.harm_vector import HarmVector, ModelDifferenceHarmVector, is_harm_vector_folder, load_harm_vector
from editsafe.hdr.trim import Threshold, Trimmer, find_threshold
from editsafe.io import write_json_atomic
from editsafe.models.refs import MANIFEST_NAME, SAFE_KIND, ResolvedModel, resolve_model
from editsafe.models.tensors import INDEX_FILE_NAME, TensorSource, row_chunks
from editsafe.models.writer import StreamingSafetensorsWriter

logger = logging.getLogger(__name__)

Method = Literal["ties", "task-vector"]
Scenario = Literal["edited", "base", "sft"]
METHODS: tuple[str, ...] = ("ties", "task-vector")
SCENARIOS: tuple[str, ...] = ("edited", "base", "sft")
DEFAULT_K = 10.0
DEFAULT_LAMBDA = 3.0
# Row blocks contain at most this many values (1 MiB in float32), which bounds
# the temporaries of one block at about ten MiB.
DEFAULT_BLOCK_ELEMENTS = 1 << 18
# Files copied from the target folder beside the new weights (config, generation config, tokenizer).
_COPIED_PATTERNS = ("*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken")
_NOT_COPIED = {MANIFEST_NAME, INDEX_FILE_NAME, "harm.json"}

ModelInput = str | os.PathLike[str] | ResolvedModel


def remove_harm_direction(
    target: ModelInput,
    harm: str | os.PathLike[str] | HarmVector,
    *,
    out: str | os.PathLike[str],
    region: set[int] | list[int] | None = None,
    k: float = DEFAULT_K,
    lam: float = DEFAULT_LAMBDA,
    method: Method = "ties",
    per_tensor: bool = False,
    include_embeddings: bool = False,
    base: ModelInput | None = None,
    base_hash_check: bool = True,
    scenario: Scenario | None = None,
    overwrite: bool = False,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> dict[str, Any]:
    """Write θ_int = θ_t − λ · τ_H' to ``out`` and return its ``editsafe.json`` record.

    τ_H' is τ_H masked to the parameters of the decoder layers in ``region``
    (None: every layer), plus the tensors outside the layers (embeddings, final
    norm, head) when ``include_embeddings``, then trimmed: of the N
    masked entries, exactly K = ⌈k/100 · N⌉ survive, chosen
    by one global magnitude threshold (``per_tensor``: one threshold per
    tensor, K counted per tensor); entries equal to the threshold are kept in
    target file order, then row-major order. ``method="task-vector"`` keeps
    every entry (k = 100). N counts every entry of the masked float
    tensors; parameters the harm vector does not store have τ_H = 0 there.

    ``harm`` is a harm-vector folder (``editsafe harm``), an open harm vector,
    or a harmful model reference together with ``base`` (τ_H = θ_H − θ_base is
    then computed on read). The arithmetic is float32 and the result is
    stored in the target's dtype. Tensors outside the mask are copied byte for
    byte, so they are bit-identical to θ_t.

    Checks, all made before ``out`` appears:

    * the harm vector's base hash must match the target's base: an edit
      folder's base, or a plain folder itself unless ``scenario="sft"``
      (``base_hash_check=False`` skips this check);
    * tensor names and shapes must agree (:class:`ProvenanceError` names the
      tensor and both shapes);
    * τ_H and the result must be finite (:class:`NumericalError`).

    The folder is built under a temporary name and renamed into place.

    The returned record (also ``out/editsafe.json``)::

        {"kind": "safe-model", "format_version": 1, "scenario": "edited"|"base"|"sft",
         "region": [layer indices], "include_embeddings": bool,
         "hdr": {"method", "k", "lambda", "per_tensor", "include_embeddings",
                 "masked_tensors", "masked_entries", "kept_entries",
                 "changed_entries", "threshold", "ties_at_threshold", "ties_kept",
                 "tensor_thresholds", "arithmetic_dtype"},
         "icv": null, "target": {...}, "harm": {...}, "base": {"hash": ...},
         "created_by": "editsafe <version>"}

    ``kept_entries`` is K; ``changed_entries`` counts the kept entries whose
    τ_H is non-zero; ``threshold`` is the K-th largest |τ_H| (0.0 when every
    entry is kept, null with ``per_tensor``, where ``tensor_thresholds`` maps
    each tensor to its own). The ICV stage fills ``icv`` later.
    """
    effective_k = _check_options(method, k, lam, scenario, max_block_elements)
    target_model = target if isinstance(target, ResolvedModel) else resolve_model(target)
    output = Path(out)
    _check_output(output, overwrite)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        with TensorSource(target_model) as target_source:
            harm_vector = _open_harm(harm, base)
            try:
                resolved_scenario = _check_base(target_model, harm_vector, scenario, base_hash_check, region)
                layers = _check_region(region, target_source.num_layers)
                masked = _masked_names(target_source, harm_vector, set(layers), include_embeddings)
                thresholds = _select(masked, harm_vector, target_source, effective_k, per_tensor, max_block_elements)
                counts = _write_weights(target_source, harm_vector, masked, thresholds, lam, staging, max_block_elements)
                _copy_auxiliary_files(target_source.folder, staging)
            finally:
                harm_vector.close()
        record = {
            "kind": SAFE_KIND,
            "format_version": 1,
            "scenario": resolved_scenario,
            "region": layers,
            "include_embeddings": include_embeddings,
            "hdr": {
                "method": method, "k": effective_k, "lambda": lam, "per_tensor": per_tensor,
                "include_embeddings": include_embeddings, **_summarise(counts, thresholds, per_tensor),
                "arithmetic_dtype": "float32",
            },
            "icv": None,
            "target": target_model.provenance(),
            "harm": harm_vector.provenance(),
            "base": {"hash": harm_vector.base_hash},
            "created_by": f"editsafe {__version__}",
        }
        write_json_atomic(staging / MANIFEST_NAME, record)
        _publish(staging, output, overwrite)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("wrote the HDR model to %s (%d entries changed)", output, record["hdr"]["changed_entries"])
    return record


def _check_options(method: str, k: float, lam: float, scenario: str | None, max_block_elements: int) -> float:
    if method not in METHODS:
        raise ConfigError(f"unknown HDR method {method!r}; allowed: {', '.join(METHODS)}")
    if scenario is not None and scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}")
    if not math.isfinite(lam):
        raise ConfigError(f"lambda must be a finite number, got {lam}")
    if max_block_elements < 1:
        raise ConfigError(f"max_block_elements must be positive, got {max_block_elements}")
    if method == "task-vector":
        return 100.0
    if not (math.isfinite(k) and 0 < k <= 100):
        raise ConfigError(f"k must be a percentage in (0, 100], got {k}")
    return float(k)


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputExistsError(f"{output} already exists and is not empty; choose another --out or pass --overwrite")


def _open_harm(harm: str | os.PathLike[str] | HarmVector, base: ModelInput | None) -> HarmVector:
    if not isinstance(harm, (str, os.PathLike)):
        return harm
    if is_harm_vector_folder(harm):
        return load_harm_vector(harm)
    if base is None:
        raise ConfigError(
            f"{harm} is not a harm-vector folder (no harm.json); to use a harmful model, also pass its base "
            "model (base=..., --base) so that τ_H = θ_H − θ_base can be computed"
        )
    base_model = base if isinstance(base, ResolvedModel) else resolve_model(base)
    return ModelDifferenceHarmVector(TensorSource(base_model), TensorSource(resolve_model(harm)))


def _expected_base_hash(target: ResolvedModel) -> str:
    if target.kind == "edit" and target.base is not None:
        return target.base.content_hash
    if target.kind == "safe":
        recorded = (target.manifest.get("base") or {}).get("hash")
        if recorded:
            return str(recorded)
    return target.content_hash


def _check_base(
    target: ResolvedModel, harm: HarmVector, scenario: str | None, base_hash_check: bool, region: Any
) -> str:
    expected = _expected_base_hash(target)
    same_base = expected == harm.base_hash
    declared_sft = scenario == "sft" and target.kind in ("folder", "alias", "hub")
    if base_hash_check and not same_base and not declared_sft:
        raise ProvenanceError(
            f"the harm vector was computed for a base with hash {harm.base_hash}, but the target "
            f"{target.reference} has base hash {expected}; compute the harm vector on the target's base "
            "(or, for a model fine-tuned from that base, pass scenario='sft' / --scenario sft)"
        )
    if scenario is None:
        if target.kind == "edit" or region is not None:
            scenario = "edited"
        else:
            scenario = "base" if same_base else "sft"
    if not same_base:
        logger.warning("the target's hash %s differs from the harm vector's base %s (%s scenario)", expected, harm.base_hash, scenario)
    return scenario


def _check_region(region: set[int] | list[int] | None, num_layers: int) -> list[int]:
    if region is None:
        return list(range(num_layers))
    layers = sorted({int(layer) for layer in region})
    outside = [layer for layer in layers if not 0 <= layer < num_layers]
    if outside:
        raise ConfigError(f"region layers {outside} are outside the model's layers 0..{num_layers - 1}")
    if not layers:
        raise ConfigError("the region is empty; pass at least one decoder-layer index")
    return layers


def _masked_names(target: TensorSource, harm: HarmVector, layers: set[int], include_embeddings: bool) -> list[str]:
    """Return the float target tensors inside the mask, in target file order, after checking the harm vector.

    Every harm tensor inside the mask must exist in the target with the same shape.
    """
    def inside(name: str) -> bool:
        layer = target.architecture.layer_of(name)
        return layer in layers if layer is not None else include_embeddings

    for name in harm.names:
        if not inside(name):
            continue
        if name not in target:
            if name == target.tied_head:
                raise ProvenanceError(
                    f"the harm vector has a separate {name}, but the target ties it to {target.tied_to}; "
                    "a tied head is changed once, through the embedding; recompute the harm vector from a tied base"
                )
            raise ProvenanceError(f"the harm vector has tensor {name}, which the target model does not have")
        target_shape, harm_shape = target.info(name).shape, tuple(harm.shape(name))
        if target_shape != harm_shape:
            raise ProvenanceError(f"tensor {name} has shape {target_shape} in the target and {harm_shape} in the harm vector")
        if not target.info(name).is_float:
            raise ProvenanceError(f"tensor {name} of the target is {target.info(name).dtype}, not a float tensor")
    return [name for name in target.names if target.info(name).is_float and inside(name)]


def _harm_rows(harm: HarmVector, stored: set[str], target: TensorSource, name: str, start: int, stop: int) -> torch.Tensor:
    """Rows of τ_H in float32; a parameter the harm vector does not store has τ_H = 0."""
    if name in stored:
        return harm.get_rows(name, start, stop)
    shape = target.info(name).shape
    return torch.zeros(shape if len(shape) == 0 else (stop - start, *shape[1:]), dtype=torch.float32)


def _harm_blocks(
    harm: HarmVector, target: TensorSource, names: list[str], max_elements: int
) -> Iterator[torch.Tensor]:
    stored = set(harm.names)
    for name in names:
        for start, stop in row_chunks(target.info(name).shape, max_elements):
            yield _harm_rows(harm, stored, target, name, start, stop)


def _select(
    masked: list[str], harm: HarmVector, target: TensorSource, k: float, per_tensor: bool, max_elements: int
) -> dict[str, Threshold]:
    """Return the threshold of each masked tensor (the same object for all with a global threshold)."""
    if not masked:
        raise ConfigError("the region contains no float tensors; check the region against the model's layers")
    if not per_tensor:
        threshold = find_threshold(lambda: _harm_blocks(harm, target, masked, max_elements), k)
        return {name: threshold for name in masked}
    return {
        name: find_threshold(lambda name=name: _harm_blocks(harm, target, [name], max_elements), k)  # type: ignore[misc]
        for name in tqdm(masked, desc="per-tensor thresholds", unit="tensor")
    }


def _write_weights(
    target: TensorSource,
    harm: HarmVector,
    masked: list[str],
    thresholds: dict[str, Threshold],
    lam: float,
    staging: Path,
    max_elements: int,
) -> list[Trimmer]:
    """Write θ_int's safetensors files into ``staging`` with the target's file layout; return the trimmers used."""
    masked_set = set(masked)
    trimmers: dict[int, Trimmer] = {}
    with tqdm(total=len(target.names), desc="removing the harm direction", unit="tensor") as progress:
        for file_name, names in target.shard_layout().items():
            entries = [(name, target.info(name).dtype, target.info(name).shape) for name in names]
            with StreamingSafetensorsWriter(staging / file_name, entries, {"format": "pt"}) as writer:
                for name in names:
                    if name in masked_set:
                        trimmer = trimmers.setdefault(id(thresholds[name]), Trimmer(thresholds[name]))
                        writer.write_blocks(name, _hdr_blocks(target, harm, name, trimmer, lam, max_elements))
                    elif name in target.patched_names:
                        chunks = row_chunks(target.info(name).shape, max_elements)
                        writer.write_blocks(name, (target.get_rows(name, start, stop) for start, stop in chunks))
                    else:
                        writer.copy_bytes(name, *target.byte_range(name))
                    progress.update(1)
    return list(trimmers.values())


def _summarise(trimmers: list[Trimmer], thresholds: dict[str, Threshold], per_tensor: bool) -> dict[str, Any]:
    """Return the counts of the ``hdr`` record."""
    unique = [trimmer.threshold for trimmer in trimmers]
    return {
        "masked_tensors": len(thresholds),
        "masked_entries": sum(threshold.total for threshold in unique),
        "kept_entries": sum(trimmer.kept for trimmer in trimmers),
        "changed_entries": sum(trimmer.nonzero_kept for trimmer in trimmers),
        "threshold": None if per_tensor else unique[0].value,
        "ties_at_threshold": sum(threshold.ties for threshold in unique),
        "ties_kept": sum(threshold.ties_kept for threshold in unique),
        "tensor_thresholds": {name: threshold.value for name, threshold in thresholds.items()} if per_tensor else None,
    }


def _hdr_blocks(
    target: TensorSource, harm: HarmVector, name: str, trimmer: Trimmer, lam: float, max_elements: int
) -> Iterator[torch.Tensor]:
    dtype = target.info(name).dtype
    stored = set(harm.names)
    for start, stop in row_chunks(target.info(name).shape, max_elements):
        trimmed = trimmer.trim(_harm_rows(harm, stored, target, name, start, stop))
        result = target.get_rows(name, start, stop).to(torch.float32) - lam * trimmed
        if not torch.isfinite(result).all():
            raise NumericalError(f"HDR gives NaN or infinite values in {name}; check λ and the harm vector")
        yield result.to(dtype)


def _copy_auxiliary_files(source: Path, destination: Path) -> None:
    for pattern in _COPIED_PATTERNS:
        for path in source.glob(pattern):
            if path.is_file() and path.name not in _NOT_COPIED:
                shutil.copy2(path, destination / path.name)
    index = source / INDEX_FILE_NAME
    if index.is_file():
        shutil.copy2(index, destination / INDEX_FILE_NAME)


def _publish(staging: Path, output: Path, overwrite: bool) -> None:
    """Move the finished staging folder to ``output`` (replacing it only with ``overwrite``)."""
    if output.exists():
        if any(output.iterdir()) and not overwrite:
            raise OutputExistsError(f"{output} appeared while HDR was running; nothing was replaced")
        shutil.rmtree(output)
    os.replace(staging, output)
