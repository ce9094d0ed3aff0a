"""The run-level files of an edit run (``run.json``, ``manifest.jsonl``) and what resuming keeps.

A finished edit is one whose folder is complete. Its folder's
``editsafe.json`` is the source of truth, so its manifest line is rebuilt
from it when an interrupted run wrote the folder but not the line. When a run
starts, the manifest is rewritten atomically with the lines it keeps: every
finished edit and, in sequential mode, the failed edits before the point where
the run continues. Other failed edits are run again and get a new line, so the
manifest ends with one line per edit.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from editsafe import __version__
from editsafe.edit_folder import is_complete, read_edit_manifest
from editsafe.errors import ConfigError
from editsafe.io import append_jsonl, read_jsonl, sha256_file, sha256_json, write_json_atomic, write_text_atomic
from editsafe.models.refs import ResolvedModel

if TYPE_CHECKING:
    from editsafe.edit_runner import EditRunOptions
    from editsafe.rome import RomeHyperParams

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.jsonl"
EDITS_FOLDER = "edits"
RUN_KIND = "rome-edit-run"


@dataclass
class RunState:
    """The records of an output folder: kept from earlier runs plus those added by this run.

    ``settled_failures`` are failed edits of a sequential run that are not run
    again, because later finished edits were built without them.
    """

    output: Path
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    resume_folder: Path | None = None
    settled_failures: set[str] = field(default_factory=set)
    kept: list[dict[str, Any]] = field(default_factory=list)
    added: list[dict[str, Any]] = field(default_factory=list)

    @property
    def manifest_path(self) -> Path:
        return self.output / MANIFEST_FILE

    def add(self, record: dict[str, Any]) -> None:
        """Append one edit's record to the manifest (flushed to disk at once)."""
        append_jsonl(self.manifest_path, record)
        self.added.append(record)
        if record["status"] == "done":
            self.finished[record["id"]] = record

    def records(self) -> list[dict[str, Any]]:
        """Return every manifest record in file order."""
        return self.kept + self.added


def edit_folder(output: Path, identifier: str) -> Path:
    """Return the folder of edit ``identifier`` under ``output``."""
    return output / EDITS_FOLDER / identifier


def run_fingerprint(
    options: EditRunOptions, base: ResolvedModel, hparams: RomeHyperParams
) -> dict[str, Any]:
    """Return the settings that decide an edit's result; a change means the old results no longer apply."""
    subjects_hash = sha256_file(options.subjects) if options.subjects else None
    return {
        "base_hash": base.content_hash,
        "hparams_sha256": sha256_json(hparams.to_dict()),
        "edits_sha256": sha256_file(options.edits_path),
        "mode": options.mode,
        "seed": options.seed,
        "backend": options.backend,
        "materialize": options.materialize,
        "subject_rule": options.subject_rule,
        "subjects_sha256": subjects_hash,
    }


def prepare_output(
    output: Path,
    options: EditRunOptions,
    base: ResolvedModel,
    hparams: RomeHyperParams,
    selected_ids: list[str],
    *,
    overwrite: bool,
) -> RunState:
    """Check ``output`` against this run's settings, write ``run.json`` and return what is already done."""
    fingerprint = run_fingerprint(options, base, hparams)
    run_path = output / RUN_FILE
    if overwrite:
        clear_results(output)
    elif run_path.is_file():
        _check_same_settings(run_path, fingerprint)
    elif (output / MANIFEST_FILE).exists() or (output / EDITS_FOLDER).exists():
        raise ConfigError(f"{output} contains edit results without {RUN_FILE}; pass --overwrite or choose another --out")

    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_path, {
        "kind": RUN_KIND,
        "settings": {
            "model": options.model_reference, "hparams": str(options.hparams_path.resolve()),
            "edits": str(options.edits_path.resolve()), "ids": list(options.ids) if options.ids else None,
            "limit": options.limit, "mode": options.mode, "seed": options.seed, "backend": options.backend,
            "materialize": options.materialize, "subject_rule": options.subject_rule, "subjects": options.subjects,
        },
        "fingerprint": fingerprint,
        "hparams": {"path": str(options.hparams_path.resolve()), "sha256": sha256_file(options.hparams_path)},
        "base": base.provenance(),
        "editsafe_version": __version__,
    })
    return _collect_state(output, options, selected_ids)


def clear_results(output: Path) -> None:
    """Delete the run file, manifest and edit folders of an earlier run in ``output``."""
    for name in (RUN_FILE, MANIFEST_FILE):
        (output / name).unlink(missing_ok=True)
    shutil.rmtree(output / EDITS_FOLDER, ignore_errors=True)


def _check_same_settings(run_path: Path, fingerprint: dict[str, Any]) -> None:
    previous = read_run_file(run_path).get("fingerprint", {})
    changed = sorted(key for key in fingerprint if previous.get(key) != fingerprint[key])
    if changed:
        details = "; ".join(f"{key}: {previous.get(key)!r} -> {fingerprint[key]!r}" for key in changed)
        raise ConfigError(
            f"{run_path.parent} contains a run with other settings ({details}); "
            "pass --overwrite to replace it, or choose another --out"
        )


def read_run_file(run_path: Path) -> dict[str, Any]:
    """Return the contents of a ``run.json``."""
    try:
        return json.loads(run_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ConfigError(f"{run_path}: invalid JSON ({error}); pass --overwrite to start the run again") from error


def _collect_state(output: Path, options: EditRunOptions, selected_ids: list[str]) -> RunState:
    state = RunState(output=output)
    previous = read_jsonl(state.manifest_path, skip_partial_last=True) if state.manifest_path.is_file() else []
    latest = {record.get("id"): record for record in previous}

    # Every complete folder is a finished edit, whether this run selected it or not.
    folders = sorted(path for path in (output / EDITS_FOLDER).glob("*") if not path.name.startswith("."))
    for folder in folders:
        if is_complete(folder, materialize=options.materialize):
            record = latest.get(folder.name)
            if record is None or record.get("status") != "done":
                record = manifest_record_from_folder(folder)
            state.finished[folder.name] = record

    if options.mode == "sequential":
        state.settled_failures = _sequential_resume(state, selected_ids, latest)

    # Keep the previous manifest's order, then add finished folders it was missing.
    seen: set[str] = set()
    for record in previous:
        identifier = record.get("id")
        if identifier in seen:
            continue
        if identifier in state.finished or identifier in state.settled_failures:
            state.kept.append(state.finished.get(identifier, latest[identifier]))
            seen.add(identifier)
    state.kept.extend(record for identifier, record in state.finished.items() if identifier not in seen)
    write_text_atomic(state.manifest_path, "".join(_json_line(record) for record in state.kept))
    return state


def _sequential_resume(state: RunState, selected_ids: list[str], latest: dict[Any, dict[str, Any]]) -> set[str]:
    """Find the last finished edit in request order and check that the stored sequence matches this run.

    Returns the ids of failed edits before that point, whose lines are kept
    (they are not run again, because a later edit was built without them).
    """
    finished_positions = [index for index, identifier in enumerate(selected_ids) if identifier in state.finished]
    if not finished_positions:
        return set()
    last = finished_positions[-1]
    resume_id = selected_ids[last]
    state.resume_folder = edit_folder(state.output, resume_id)
    manifest = read_edit_manifest(state.resume_folder) or {}
    expected = [identifier for identifier in selected_ids[: last + 1] if identifier in state.finished]
    if manifest.get("sequence") != expected:
        raise ConfigError(
            f"{state.resume_folder} was built from the edits {manifest.get('sequence')}, but this run's requests "
            f"up to {resume_id!r} are {expected}; pass --overwrite or choose another --out"
        )
    # Edits before the resume point that are neither finished nor recorded as failed cannot be slotted in.
    skipped = [
        identifier for identifier in selected_ids[:last]
        if identifier not in state.finished and latest.get(identifier, {}).get("status") != "failed"
    ]
    if skipped:
        raise ConfigError(
            f"sequential run in {state.output} already continued past {', '.join(skipped)}; "
            "pass --overwrite or choose another --out to include them"
        )
    return {identifier for identifier in selected_ids[:last] if identifier not in state.finished}


def manifest_record_from_folder(folder: Path) -> dict[str, Any]:
    """Rebuild a finished edit's manifest line from its ``editsafe.json``."""
    manifest = read_edit_manifest(folder) or {}
    return {
        "id": manifest.get("id", folder.name),
        "status": "done",
        "layer": manifest.get("layer"),
        "weight_name": manifest.get("weight_name"),
        "metrics": manifest.get("metrics"),
        "seconds": manifest.get("seconds"),
        "folder": f"{EDITS_FOLDER}/{folder.name}",
    }


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"
