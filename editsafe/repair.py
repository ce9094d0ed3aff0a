"""Safety Arithmetic repair: Harm Direction Removal on the weights, then the in-context safety vector.

``repair`` turns a target model (an edited model, a base chat model or an SFT
model) into a safe-model folder: the HDR weights θ_int = θ_t − λ·τ_H' in
Hugging Face layout, the ICV tensors computed on θ_int (in ``icv/``), and ``editsafe.json``
with every setting and the provenance of every input. The folder is built
under a temporary name beside ``out`` and renamed into place at the end, so an
interrupted run leaves no half-written folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from editsafe import __version__
from editsafe.errors import ConfigError, OutputExistsError, ProvenanceError
from editsafe.icv.compute import compute_icv, load_demonstrations
from editsafe.icv.hooks import install_icv
from editsafe.icv.vector import ICV_SUBFOLDER
from editsafe.io import sha256_file, sha256_json, write_json_atomic
from editsafe.models.architectures import num_layers
from editsafe.models.default import ALIASES
from editsafe.models.loading import load_tokenizer, load_weights
from editsafe.models.refs import MANIFEST_NAME, SAFE_KIND, ResolvedModel, resolve_model
from editsafe.paths import editsafe_home, package_data
from editsafe.repair_settings import RepairSettings, load_settings

logger = logging.getLogger(__name__)

SCENARIOS: tuple[str, ...] = ("edited", "base", "sft")
ModelInput = str | os.PathLike[str] | ResolvedModel


def repair(
    edited: ModelInput | None = None,
    target: ModelInput | None = None,
    scenario: str | None = None,
    base: ModelInput | None = None,
    harm: str | os.PathLike[str] | None = None,
    demos: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    hdr: bool = True,
    icv: bool = True,
    hdr_method: str | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Repair a model with Safety Arithmetic and return the safe-model folder.

    Give either ``edited`` (an edit folder or an edited model folder; the region
    R is the edited layers and their neighbours, found by the layer locator)
    or ``target`` with ``scenario`` "base" or "sft" (R is every layer). The base
    model comes from the edit folder unless ``base`` is given, and must then
    have the same content hash. ``harm`` is a harm-vector folder from
    ``editsafe harm``; without it τ_H is trained on the bundled D_H (restricted
    to R in the edited scenario) and cached under ``$EDITSAFE_HOME/harm`` by
    base hash, data hash, layers and settings. ``config`` is a YAML file of
    settings (see :mod:`editsafe.repair_settings`) and ``overrides`` a dict of
    the same keys, applied last. ``hdr=False`` copies the target's weights;
    ``icv=False`` stores no vector.
    """
    started = time.perf_counter()
    target_model, scenario = _resolve_target(edited, target, scenario)
    base_model = _resolve_base(target_model, base, scenario, needs_base=hdr and harm is None)
    output = _check_output(out, overwrite)
    alias = base_model.reference if base_model is not None and base_model.reference in ALIASES else None
    settings = load_settings(alias, config, hdr_method=hdr_method, **(overrides or {}))
    if not hdr and not icv:
        raise ConfigError("both stages are switched off (--no-hdr and --no-icv); keep at least one")

    demos_path = Path(demos) if demos is not None else package_data("icv_demos.jsonl")
    pairs = load_demonstrations(demos_path) if icv else []
    region = _region(target_model, base_model, scenario)
    harm_folder = _harm_folder(harm, base_model, region, scenario, seed, progress) if hdr else None

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        folder = staging / "model"

        # Stage 2: HDR writes θ_int, or the target's weights are copied as they are.
        if hdr:
            from editsafe.hdr import remove_harm_direction

            assert harm_folder is not None
            record = remove_harm_direction(
                target_model, harm_folder, out=folder, region=region, k=settings.k, lam=settings.lam,
                method=settings.hdr_method, scenario=scenario,  # type: ignore[arg-type]
            )
        else:
            record = _copy_target(target_model, folder, region, scenario)

        # Stage 3: the ICV is computed on θ_int and stored beside the weights.
        record["icv"] = _build_icv(folder, pairs, region, settings, progress) if icv else None
        if record["icv"] is not None:
            record["icv"]["demos"] = {"path": str(demos_path.resolve()), "sha256": sha256_file(demos_path)}

        record.update({
            "settings": settings.to_dict(),
            "seed": seed,
            "target": target_model.provenance(),
            "base": base_model.provenance() if base_model is not None else record.get("base"),
            "created_by": f"editsafe {__version__}",
            "seconds": round(time.perf_counter() - started, 1),
        })
        write_json_atomic(folder / MANIFEST_NAME, record)
        _publish(folder, output, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote the safe model to %s (HDR %s, ICV %s, region %s)", output, "on" if hdr else "off",
                "on" if icv else "off", region)
    return output


def _resolve_target(
    edited: ModelInput | None, target: ModelInput | None, scenario: str | None
) -> tuple[ResolvedModel, str]:
    if (edited is None) == (target is None):
        raise ConfigError("give exactly one of edited (--edited) or target (--target)")
    if edited is not None:
        if scenario not in (None, "edited"):
            raise ConfigError(f"an edited model is repaired in the 'edited' scenario, got scenario {scenario!r}")
        return _as_resolved(edited), "edited"
    if scenario not in ("base", "sft"):
        raise ConfigError(f"a target needs scenario 'base' or 'sft' (--scenario), got {scenario!r}")
    return _as_resolved(target), scenario  # type: ignore[arg-type]


def _resolve_base(
    target: ResolvedModel, base: ModelInput | None, scenario: str, *, needs_base: bool
) -> ResolvedModel | None:
    given = _as_resolved(base) if base is not None else None
    if scenario == "base":
        if given is not None and given.content_hash != target.content_hash:
            raise ProvenanceError(
                f"in the base scenario the target is the base, but --base {given.reference} has hash "
                f"{given.content_hash} and the target {target.reference} has hash {target.content_hash}"
            )
        return target
    if scenario == "edited" and target.base is not None:
        if given is not None and given.content_hash != target.base.content_hash:
            raise ProvenanceError(
                f"the edit {target.reference} was made on a base with hash {target.base.content_hash}, "
                f"but --base {given.reference} has hash {given.content_hash}; pass the edit's own base or omit --base"
            )
        return target.base
    if given is None and (scenario == "edited" or needs_base):
        raise ConfigError(
            f"{target.reference} does not name its base model; pass the base with --base"
            + (" (or a harm vector with --harm)" if scenario == "sft" else "")
        )
    return given


def _check_output(out: str | os.PathLike[str] | None, overwrite: bool) -> Path:
    if out is None:
        raise ConfigError("an output folder is required (--out)")
    output = Path(out)
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"{output}: exists and is not a folder; choose another --out")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputExistsError(f"{output}: the output folder exists; pass --overwrite to replace it or choose another --out")
    return output


def _region(target: ResolvedModel, base: ResolvedModel | None, scenario: str) -> list[int]:
    """Return R: the located edit region, or every layer for the base and SFT scenarios."""
    if scenario != "edited":
        from transformers import AutoConfig

        return list(range(num_layers(AutoConfig.from_pretrained(target.weights_folder))))

    from editsafe.locate import locate_edit

    report = locate_edit(base, target)
    if not report.region:
        raise ConfigError(
            f"the locator found no changed decoder layer between {target.reference} and its base; "
            "there is no edit region to repair (is this the unedited model?)"
        )
    logger.info("edited layers %s, region %s", report.edited_layers, report.region)
    return list(report.region)


def _harm_folder(
    harm: str | os.PathLike[str] | None,
    base: ResolvedModel | None,
    region: list[int],
    scenario: str,
    seed: int,
    progress: bool,
) -> Path:
    """Return a harm-vector folder: the given one, or one trained on the bundled D_H and cached."""
    from editsafe.hdr import load_harm_vector, train_harm_vector
    from editsafe.hdr.harm_vector import check_harm_base

    if harm is not None:
        vector = load_harm_vector(harm)
        try:
            if base is not None:
                check_harm_base(vector, base)
        finally:
            vector.close()
        return Path(harm)

    assert base is not None
    from editsafe.hdr.harm_data import default_harm_data

    layers = region if scenario == "edited" else None
    data = default_harm_data()
    # The key contains every input of the fine-tune, so a change of a training default
    # (epochs, learning rate, ...) in a later editsafe version gets a new folder.
    from editsafe.hdr import harm as harm_training

    training = {
        "epochs": harm_training.DEFAULT_EPOCHS, "lr": harm_training.DEFAULT_LEARNING_RATE,
        "batch_size": harm_training.DEFAULT_BATCH_SIZE, "max_length": harm_training.DEFAULT_MAX_LENGTH,
    }
    key = sha256_json(
        {"base": base.content_hash, "data": sha256_file(data), "layers": layers, "seed": seed, "training": training}
    )
    folder = editsafe_home() / "harm" / key[:20]
    logger.info("training the harm vector on %s (layers %s), cached at %s", data.name, layers or "all", folder)
    stored = train_harm_vector(base, data, out=folder, layers=layers, seed=seed)
    stored.close()
    return folder


def _copy_target(target: ResolvedModel, folder: Path, region: list[int], scenario: str) -> dict[str, Any]:
    """Write the target's weights unchanged (edits applied) and return the manifest without HDR."""
    model = load_weights(target, device="cpu")
    tokenizer = load_tokenizer(target)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return {"kind": SAFE_KIND, "format_version": 1, "scenario": scenario, "region": region, "hdr": None}


def _build_icv(
    folder: Path, pairs: list[Any], region: list[int], settings: RepairSettings, progress: bool
) -> dict[str, Any]:
    """Compute the ICV on the model in ``folder``, store it there and return its manifest record."""
    resolved = ResolvedModel(reference=str(folder), kind="folder", weights_folder=folder)
    model = load_weights(resolved, device="cpu")
    tokenizer = load_tokenizer(resolved)
    vector = compute_icv(
        model, tokenizer, pairs, region, method=settings.icv_method, token=settings.icv_token,  # type: ignore[arg-type]
        site=settings.site, chat_template=settings.chat_template,  # type: ignore[arg-type]
        batch_size=settings.icv_batch_size, progress=progress,
    )
    vector.save(folder / ICV_SUBFOLDER)

    # Installing once checks that the stored vector fits the stored model before the folder is published.
    handle = install_icv(model, vector, alpha=settings.alpha, icv_scale=settings.icv_scale, gate=settings.gate,
                         site=settings.site)  # type: ignore[arg-type]
    handle.remove()
    return {**handle.settings(), **{key: value for key, value in vector.metadata().items() if key != "layers"}}


def _publish(folder: Path, output: Path, overwrite: bool) -> None:
    """Move the finished folder to ``output``; an existing output is replaced only with ``overwrite``."""
    if not output.exists():
        os.replace(folder, output)
        return
    if any(output.iterdir()) and not overwrite:
        raise OutputExistsError(f"{output}: appeared while repairing; pass --overwrite to replace it")
    retired = output.with_name(f".{output.name}.old-{os.getpid()}")
    os.replace(output, retired)
    try:
        os.replace(folder, output)
    except OSError:
        os.replace(retired, output)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _as_resolved(reference: ModelInput) -> ResolvedModel:
    return reference if isinstance(reference, ResolvedModel) else resolve_model(reference)
