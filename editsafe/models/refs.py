"""Resolution of model references.

A model reference is what a user passes wherever a model is expected:

* an alias such as ``smollm2-135m-instruct`` (prepared on first use),
* a local Hugging Face folder (``config.json`` plus safetensors weights),
* an editsafe edit folder (``editsafe.json`` of kind ``rome-edit`` plus
  ``delta.safetensors``): θ_edit is rebuilt from its base plus the patches,
* an editsafe safe-model folder (``editsafe.json`` of kind ``safe-model``),
* a hub id ``owner/name``, used only because the user named it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from editsafe.errors import ModelReferenceError
from editsafe.io import read_json, sha256_file, sha256_json
from editsafe.models.default import ALIASES, DEFAULT_ALIAS, prepare_alias
from editsafe.models.hashing import weights_hash

logger = logging.getLogger(__name__)

ReferenceKind = Literal["alias", "folder", "hub", "edit", "safe"]

MANIFEST_NAME = "editsafe.json"
PATCH_FILE_NAME = "delta.safetensors"
EDIT_KIND = "rome-edit"
SAFE_KIND = "safe-model"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ResolvedModel:
    """A model reference resolved to files on disk.

    ``weights_folder`` is the Hugging Face folder whose weights are loaded: the
    model itself, or for an edit folder the base model that the patches apply to.
    """

    reference: str
    kind: ReferenceKind
    weights_folder: Path
    base: ResolvedModel | None = None
    artefact_folder: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    _hash: str | None = None

    @property
    def content_hash(self) -> str:
        """SHA-256 that identifies the weights (for an edit: base hash plus patch hash)."""
        if self._hash is None:
            if self.kind == "edit":
                assert self.base is not None and self.artefact_folder is not None
                patch_hash = sha256_file(self.artefact_folder / PATCH_FILE_NAME)
                self._hash = sha256_json({"base": self.base.content_hash, "patches": patch_hash})
            else:
                self._hash = weights_hash(self.weights_folder)
        return self._hash

    def provenance(self) -> dict[str, Any]:
        """Return the JSON record that names this model in artefacts."""
        record: dict[str, Any] = {"reference": self.reference, "kind": self.kind, "hash": self.content_hash}
        if self.kind in ("folder", "edit", "safe"):
            record["path"] = str((self.artefact_folder or self.weights_folder).resolve())
        if self.base is not None:
            record["base"] = self.base.provenance()
        return record


def resolve_model(reference: str | os.PathLike[str] | None = None) -> ResolvedModel:
    """Resolve a model reference; None means the embedded default model."""
    text = str(reference) if reference is not None else DEFAULT_ALIAS
    if text in ALIASES:
        return ResolvedModel(reference=text, kind="alias", weights_folder=prepare_alias(text))

    path = Path(text).expanduser()
    if path.exists():
        return _resolve_folder(text, path)
    if _HUB_ID.match(text) and not text.startswith((".", "/")):
        return _resolve_hub_id(text)
    raise ModelReferenceError(
        f"model reference {text!r} is not a known alias ({', '.join(sorted(ALIASES))}), "
        "an existing folder, or a hub id of the form owner/name"
    )


def _resolve_folder(text: str, path: Path) -> ResolvedModel:
    if not path.is_dir():
        raise ModelReferenceError(f"{path}: a model reference must be a folder, not a file")
    manifest_path = path / MANIFEST_NAME
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        manifest = read_json(manifest_path, error_type=ModelReferenceError)
    kind = manifest.get("kind")

    if kind == EDIT_KIND:
        if not (path / PATCH_FILE_NAME).is_file():
            raise ModelReferenceError(f"{path}: edit folder without {PATCH_FILE_NAME}; rerun the edit")
        base_record = manifest.get("base") or {}
        base = resolve_model(base_record.get("reference"))
        expected = base_record.get("hash")
        if expected and base.content_hash != expected:
            raise ModelReferenceError(
                f"{path}: the edit was made on a base with hash {expected}, but its base reference "
                f"{base_record.get('reference')!r} now has hash {base.content_hash}"
            )
        return ResolvedModel(
            reference=text, kind="edit", weights_folder=base.weights_folder, base=base,
            artefact_folder=path, manifest=manifest,
        )

    if not (path / "config.json").is_file():
        raise ModelReferenceError(
            f"{path}: not a model folder (no config.json) and not an editsafe artefact (no {MANIFEST_NAME})"
        )
    if kind == SAFE_KIND:
        return ResolvedModel(reference=text, kind="safe", weights_folder=path, artefact_folder=path, manifest=manifest)
    return ResolvedModel(reference=text, kind="folder", weights_folder=path)


def _resolve_hub_id(text: str) -> ResolvedModel:
    """Fetch a hub model the user named explicitly (weights, config, tokenizer only)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:  # pragma: no cover - a dependency of transformers
        raise ModelReferenceError("huggingface_hub is needed to load hub ids") from error
    logger.info("downloading %s from the model hub because it was named as a model reference", text)
    try:
        folder = snapshot_download(
            text, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt"]
        )
    except Exception as error:  # noqa: BLE001 - the hub client raises many unrelated types
        raise ModelReferenceError(f"could not download hub model {text!r}: {error}") from error
    return ResolvedModel(reference=text, kind="hub", weights_folder=Path(folder))
