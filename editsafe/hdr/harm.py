"""Fine-tuning θ_base on D_H to obtain the harm vector τ_H = θ_H − θ_base.

Supervised fine-tuning with the loss on answer tokens only (AdamW, no weight
decay). Dropout is off (the model stays in eval mode), so a run is
deterministic on the CPU for a given seed and a resumed run reproduces an
uninterrupted one. Training can be limited to some decoder layers: only
their parameters get ``requires_grad`` (restored afterwards). After every
epoch the trained tensors and the optimizer state are checkpointed
atomically; a rerun with the same settings resumes after the last finished
epoch.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from editsafe import __version__
from editsafe.errors import ConfigError, OutputExistsError, ProvenanceError
from editsafe.hdr.harm_data import IGNORE_INDEX, EncodedPair, collate, default_harm_data, encode_pair, read_harm_pairs
from editsafe.hdr.harm_vector import HARM_MANIFEST_NAME, StoredHarmVector, load_harm_vector, write_harm_vector
from editsafe.io import atomic_path, sha256_file, sha256_json, write_json_atomic
from editsafe.models.loading import load_tokenizer, load_weights
from editsafe.models.refs import ResolvedModel, resolve_model
from editsafe.models.tensors import TensorSource

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 1
DEFAULT_LEARNING_RATE = 1e-4
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_LENGTH = 128
_CHECKPOINTS = "checkpoints"

StepCallback = Callable[[int, int, float], None]


def train_harm_vector(
    model: str | os.PathLike[str] | ResolvedModel | None = None,
    data: str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str],
    layers: set[int] | list[int] | None = None,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LEARNING_RATE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int = DEFAULT_MAX_LENGTH,
    seed: int = 0,
    overwrite: bool = False,
    on_step: StepCallback | None = None,
) -> StoredHarmVector:
    """Fine-tune ``model`` (θ_base) on D_H and store τ_H = θ_H − θ_base in ``out``.

    ``data`` is a JSON Lines file of ``question``/``answer`` pairs (default:
    the bundled D_H). ``layers`` limits training to those decoder layers
    (None trains every parameter); τ_H contains exactly the trained tensors, in
    float32. ``on_step(epoch, step, loss)`` runs after each optimizer step.
    A finished folder with the same settings is returned as it is; one with
    other settings raises :class:`OutputExistsError` unless ``overwrite``.
    """
    _check_settings(epochs, lr, batch_size, max_length)
    folder = Path(out)
    base = model if isinstance(model, ResolvedModel) else resolve_model(model)
    data_path = Path(data) if data is not None else default_harm_data()
    pairs = read_harm_pairs(data_path)
    settings = {
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length, "seed": seed,
        "layers": sorted(layers) if layers is not None else "all", "optimizer": "AdamW (weight decay 0)",
        "loss": "answer tokens only", "dropout": "off",
    }
    data_record = {"path": str(data_path.resolve()), "sha256": sha256_file(data_path), "pairs": len(pairs)}
    run_key = sha256_json({"settings": settings, "data": data_record["sha256"], "base": base.content_hash})

    existing = _finished_run(folder, run_key, overwrite)
    if existing is not None:
        return existing

    network = load_weights(base, device="cpu", dtype=torch.float32)
    tokenizer = load_tokenizer(base)
    encoded = [encode_pair(tokenizer, question, answer, max_length) for question, answer in pairs]
    trained = _trainable_parameters(network, layers)
    flags = {name: parameter.requires_grad for name, parameter in network.named_parameters()}
    started = time.perf_counter()
    try:
        for name, parameter in network.named_parameters():
            parameter.requires_grad_(name in trained)
        optimizer = torch.optim.AdamW([trained[name] for name in sorted(trained)], lr=lr, weight_decay=0.0)
        losses = _resume(folder, run_key, trained, optimizer)
        for epoch in range(len(losses), epochs):
            losses.append(_train_epoch(network, optimizer, encoded, tokenizer.pad_token_id, batch_size, seed, epoch, on_step))
            _checkpoint(folder, run_key, epoch, trained, optimizer, losses)
            logger.info("epoch %d/%d: mean answer loss %.4f", epoch + 1, epochs, losses[-1])
    finally:
        for name, parameter in network.named_parameters():
            parameter.requires_grad_(flags[name])

    manifest = {
        "base": base.provenance(),
        "source": {"kind": "fine-tune", "data": data_record},
        "settings": settings,
        "run_key": run_key,
        "epoch_losses": losses,
        "trained_layers": settings["layers"],
        "seconds": round(time.perf_counter() - started, 1),
        "created_by": f"editsafe {__version__}",
    }
    _store(folder, base, trained, manifest)
    shutil.rmtree(folder / _CHECKPOINTS, ignore_errors=True)
    return load_harm_vector(folder)


def _check_settings(epochs: int, lr: float, batch_size: int, max_length: int) -> None:
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr!r}")


def _finished_run(folder: Path, run_key: str, overwrite: bool) -> StoredHarmVector | None:
    if not (folder / HARM_MANIFEST_NAME).is_file():
        return None
    if overwrite:
        shutil.rmtree(folder)
        return None
    stored = load_harm_vector(folder)
    if stored.manifest.get("run_key") == run_key:
        logger.info("%s already contains a harm vector with these settings", folder)
        return stored
    raise OutputExistsError(
        f"{folder} contains a harm vector made with other settings, data or base; choose another --out or pass --overwrite"
    )


def _trainable_parameters(network: torch.nn.Module, layers: set[int] | list[int] | None) -> dict[str, torch.nn.Parameter]:
    reference: ResolvedModel = network.editsafe_reference  # type: ignore[assignment]
    with TensorSource(reference) as source:
        architecture, count = source.architecture, source.num_layers
    if layers is not None:
        outside = sorted(layer for layer in layers if not 0 <= layer < count)
        if outside or not layers:
            raise ConfigError(f"layers {sorted(layers)} must be a non-empty subset of 0..{count - 1}")
    selected = {
        name: parameter
        for name, parameter in network.named_parameters()
        if parameter.is_floating_point() and (layers is None or architecture.layer_of(name) in set(layers))
    }
    if not selected:
        raise ConfigError("no parameters to train; check --layers against the model's parameter names")
    return selected


def _train_epoch(
    network: Any,
    optimizer: torch.optim.Optimizer,
    encoded: list[EncodedPair],
    pad_token_id: int,
    batch_size: int,
    seed: int,
    epoch: int,
    on_step: StepCallback | None,
) -> float:
    """Run one epoch over a seeded permutation (seed + epoch); return the mean batch loss."""
    # NOTE: the layers below a trained region run forward again on every step.
    # Caching their outputs once per pair would cut the cost of later epochs.
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    total = 0.0
    for step, batch in enumerate(tqdm(batches, desc=f"harm fine-tune, epoch {epoch + 1}", unit="batch")):
        loss = answer_token_loss(network, collate([encoded[index] for index in batch], pad_token_id))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        if on_step is not None:
            on_step(epoch, step, loss.item())
    return total / len(batches)


def answer_token_loss(network: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Return the mean next-token cross-entropy over the answer tokens of a collated batch.

    The output head runs only at the positions that predict an answer token
    (about a quarter of the positions for chat-formatted pairs), which saves
    most of the cost of a large vocabulary. The value equals the loss that
    transformers computes from full logits with the same labels.
    """
    hidden = network.base_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    targets = inputs["labels"][:, 1:]
    predicting = targets != IGNORE_INDEX
    logits = network.get_output_embeddings()(hidden[:, :-1][predicting])
    return torch.nn.functional.cross_entropy(logits.float(), targets[predicting])


def answer_loss(network: Any, tokenizer: Any, pairs: list[tuple[str, str]], *, max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = DEFAULT_BATCH_SIZE) -> float:
    """Return the mean answer-token loss of ``network`` on ``pairs`` (no gradients)."""
    encoded = [encode_pair(tokenizer, question, answer, max_length) for question, answer in pairs]
    losses = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            losses.append(answer_token_loss(network, collate(encoded[start:start + batch_size], tokenizer.pad_token_id)).item())
    return sum(losses) / len(losses)


def _checkpoint(
    folder: Path, run_key: str, epoch: int, trained: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer, losses: list[float],
) -> None:
    """Write the trained tensors, optimizer state and losses of a finished epoch, then drop older epochs."""
    root = folder / _CHECKPOINTS
    staging = root / f".epoch-{epoch + 1}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({name: parameter.detach().contiguous() for name, parameter in trained.items()}, str(staging / "trained.safetensors"))
    with atomic_path(staging / "optimizer.pt") as temporary:
        torch.save(optimizer.state_dict(), temporary)
    write_json_atomic(staging / "state.json", {"run_key": run_key, "epochs_done": epoch + 1, "epoch_losses": losses})
    final = root / f"epoch-{epoch + 1}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for older in root.glob("epoch-*"):
        if older != final:
            shutil.rmtree(older, ignore_errors=True)


def _resume(folder: Path, run_key: str, trained: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> list[float]:
    """Load the latest finished epoch of this run, if any; return the losses of the finished epochs."""
    root = folder / _CHECKPOINTS
    finished = sorted(root.glob("epoch-*"), key=lambda path: int(path.name.split("-")[1])) if root.is_dir() else []
    if not finished:
        return []
    latest = finished[-1]
    state = _read_json(latest / "state.json")
    if state.get("run_key") != run_key:
        raise OutputExistsError(
            f"{latest} is a checkpoint of a run with other settings, data or base; "
            "choose another --out or pass --overwrite"
        )
    tensors = load_file(str(latest / "trained.safetensors"))
    if set(tensors) != set(trained):
        raise ProvenanceError(f"{latest}: the checkpoint contains other tensors than the ones this run trains")
    with torch.no_grad():
        for name, parameter in trained.items():
            parameter.copy_(tensors[name])
    optimizer.load_state_dict(torch.load(latest / "optimizer.pt", weights_only=True))
    logger.info("resuming after epoch %d from %s", state["epochs_done"], latest)
    return list(state["epoch_losses"])


def _read_json(path: Path) -> dict[str, Any]:
    """Read a one-object JSON file written by :func:`write_json_atomic`."""
    import json

    return dict(json.loads(path.read_text(encoding="utf-8")))


def _store(folder: Path, base: ResolvedModel, trained: dict[str, torch.nn.Parameter], manifest: dict[str, Any]) -> None:
    """Write τ_H = θ_H − θ_base for the trained tensors (float32) and ``harm.json``."""
    with TensorSource(base) as source:
        names = [name for name in source.names if name in trained]
        missing = sorted(set(trained) - set(names))
        if missing:
            raise ProvenanceError(f"trained parameter {missing[0]} has no tensor of that name in {source.folder}")
        shapes = {name: source.info(name).shape for name in names}

        def read_rows(name: str, start: int, stop: int) -> torch.Tensor:
            value = trained[name].detach()
            if value.dim() > 0:
                value = value[start:stop]
            return value.to(torch.float32) - source.get_rows(name, start, stop).to(torch.float32)

        write_harm_vector(folder, names, shapes, read_rows, manifest)
