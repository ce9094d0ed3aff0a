"""The edit runner behind ``editsafe edit``: ROME edits over a file of requests, resumable.

Layout of an output folder ``OUT``:

* ``OUT/run.json``: the run's settings, seed, hyperparameter file and hash,
  edit file and hash, and the base model's provenance;
* ``OUT/manifest.jsonl``: one line per edit with ``id``, ``status``
  (``done`` or ``failed``), ``layer``, ``weight_name``, ``metrics``
  (``before`` and ``after``), and ``error`` for a failed edit;
* ``OUT/edits/<id>/``: one edit folder per finished edit (see
  :mod:`editsafe.edit_folder`), itself a model reference.

Modes: ``single`` edits the base model once per request, so each folder contains
one patch; ``sequential`` applies the requests one after another to the same
model, so folder k contains the patches of every finished edit up to and
including k and rebuilds the model as it was after edit k. In sequential mode
a failed edit is skipped and the next edit starts from the model as it was.

Resuming: running the same command again keeps every finished edit folder and
computes the rest. Sequential mode continues after the last finished edit in
request order, from the patches stored in its folder. Changing a setting that
alters results (model, hyperparameters, edit file, mode, seed, backend,
materialisation, subject rule) against an existing ``run.json`` is an error
unless ``overwrite`` is set, which deletes the old results first.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from editsafe.edit_data import load_edit_requests
from editsafe.edit_folder import check_edit_id, read_edit_manifest, remove_stale_staging
from editsafe.edit_resume import prepare_output
from editsafe.edit_step import EditStep, run_edit_step
from editsafe.errors import ConfigError
from editsafe.models.loading import load_tokenizer, load_weights
from editsafe.models.patches import RankOnePatch, apply_patch, load_patches
from editsafe.models.refs import PATCH_FILE_NAME, ResolvedModel, resolve_model
from editsafe.nointentedit import SubjectRule
from editsafe.paths import bundled_dir

logger = logging.getLogger(__name__)

Mode = Literal["single", "sequential"]
Backend = Literal["native", "easyedit"]
MODES: tuple[str, ...] = ("single", "sequential")
BACKENDS: tuple[str, ...] = ("native", "easyedit")
DEFAULT_EDITS_NAME = "unintentional.jsonl"


def default_edits_path() -> Path:
    """Return the bundled ``edits/unintentional.jsonl``."""
    return bundled_dir("edits") / DEFAULT_EDITS_NAME


@dataclass(frozen=True)
class EditRunOptions:
    """Everything that decides the results of an edit run, after defaults are filled in."""

    model_reference: str
    hparams_path: Path
    edits_path: Path
    mode: Mode
    seed: int
    backend: Backend
    materialize: bool
    subject_rule: SubjectRule
    subjects: str | None
    ids: tuple[str, ...] | None
    limit: int | None


def run_edits(
    edits: str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    hparams: str | os.PathLike[str] | None = None,
    ids: list[str] | tuple[str, ...] | None = None,
    limit: int | None = None,
    mode: Mode = "single",
    materialize: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    backend: Backend = "native",
    subject_rule: SubjectRule = "auto",
    subjects: str | os.PathLike[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run ROME edits from ``edits`` on ``model`` and write them under ``out``; return the manifest records.

    ``edits`` defaults to the bundled unintentional edits, ``model`` to the
    embedded default model and ``hparams`` to the bundled ROME file for that
    model. ``ids`` selects requests by id (in file order), then ``limit`` keeps
    the first ``limit`` of them. ``subject_rule`` and ``subjects`` (a JSON or
    CSV file, so that ``run.json`` can record its hash) choose the subjects of
    NoIntentEdit sheet rows. See the module docstring for modes, resuming and
    ``overwrite``.
    """
    from editsafe.rome import SecondMomentCache, TemplateCache, default_hparams_path, load_hparams

    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if backend == "easyedit":
        from editsafe.rome.easyedit_backend import import_easyedit

        # Fail before any work when EasyEdit is missing, not once per edit.
        import_easyedit()

    # Resolve the inputs and fill in the defaults.
    resolved = resolve_model(model)
    base, inherited = _plain_base(resolved)
    loaded: tuple[Any, Any] | None = None
    if hparams is None:
        try:
            hparams = default_hparams_path(base.reference)
        except ConfigError:
            # The bundled file may be chosen by the model's architecture, which needs the model itself.
            loaded = _load(resolved, device, dtype)
            hparams = default_hparams_path(loaded[0])
    options = EditRunOptions(
        model_reference=resolved.reference,
        hparams_path=Path(hparams),
        edits_path=Path(edits) if edits is not None else default_edits_path(),
        mode=mode, seed=seed, backend=backend, materialize=materialize, subject_rule=subject_rule,
        subjects=str(subjects) if subjects is not None else None,
        ids=tuple(ids) if ids else None, limit=limit,
    )
    rome_hparams = load_hparams(options.hparams_path)
    requests = _select(
        load_edit_requests(options.edits_path, subject_rule=subject_rule, subjects=options.subjects),
        options.ids, options.limit, options.edits_path,
    )

    # Compare with an earlier run in the same folder and decide what is left to do.
    output = Path(out)
    state = prepare_output(output, options, base, rome_hparams, [request.id for request in requests], overwrite=overwrite)
    remove_stale_staging(output / "edits")
    settled = set(state.finished) | state.settled_failures
    pending = [request for request in requests if request.id not in settled]
    logger.info(
        "%d edit(s) selected, %d already finished or settled, %d to run (%s mode)",
        len(requests), len(requests) - len(pending), len(pending), mode,
    )
    if not pending:
        return state.records()

    # Load the model once; sequential mode continues from the last finished edit's patches.
    network, tokenizer = loaded if loaded is not None else _load(resolved, device, dtype)
    carried, sequence = list(inherited), []
    if mode == "sequential" and state.resume_folder is not None:
        carried = load_patches(state.resume_folder / PATCH_FILE_NAME)
        sequence = list((read_edit_manifest(state.resume_folder) or {}).get("sequence", []))
        for patch in carried[len(inherited):]:
            apply_patch(network, patch)

    step = EditStep(
        model=network, tokenizer=tokenizer, hparams=rome_hparams, base=base, mode=mode, seed=seed,
        backend=backend, materialize=materialize, output=output, hparams_path=options.hparams_path,
        templates=TemplateCache(), stats_cache=SecondMomentCache(),
    )
    with tqdm(pending, desc="edits", unit="edit", disable=not progress) as bar:
        for request in bar:
            bar.set_postfix_str(request.id)
            record, carried, sequence = run_edit_step(step, request, carried, sequence=sequence)
            state.add(record)
    done = sum(record["status"] == "done" for record in state.added)
    logger.info("%d of %d edit(s) done, %d failed; manifest: %s", done, len(pending), len(pending) - done,
                state.manifest_path)
    return state.records()


def _load(resolved: ResolvedModel, device: str | None, dtype: str | None) -> tuple[Any, Any]:
    return load_weights(resolved, device=device, dtype=dtype), load_tokenizer(resolved)


def _plain_base(resolved: ResolvedModel) -> tuple[ResolvedModel, list[RankOnePatch]]:
    """Return the plain model under ``resolved`` and the patches that lead from it to ``resolved``.

    Editing an edit folder stores its patches again in every new folder, with
    the plain base as the reference, so each folder still rebuilds alone.
    """
    if resolved.kind != "edit":
        return resolved, []
    assert resolved.base is not None and resolved.artefact_folder is not None
    return resolved.base, load_patches(resolved.artefact_folder / PATCH_FILE_NAME)


def _select(requests: list[Any], ids: tuple[str, ...] | None, limit: int | None, source: Path) -> list[Any]:
    for request in requests:
        check_edit_id(request.id)
    if ids is not None:
        known = {request.id for request in requests}
        unknown = [identifier for identifier in ids if identifier not in known]
        if unknown:
            raise ConfigError(f"{source}: no request with id(s) {', '.join(unknown)}; check --ids against the file")
        chosen = set(ids)
        requests = [request for request in requests if request.id in chosen]
    return requests[:limit] if limit is not None else requests
