"""editsafe: audit and repair the safety damage done by knowledge editing.

The public API mirrors the command line. Submodules are imported lazily so
that ``import editsafe`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "load_model": "editsafe.models.loading",
    "resolve_model": "editsafe.models.refs",
    "prepare_alias": "editsafe.models.default",
    "EditsafeError": "editsafe.errors",
    # Stage 0: ROME and the edit runner.
    "EditRequest": "editsafe.rome",
    "load_hparams": "editsafe.rome",
    "compute_rome_patch": "editsafe.rome",
    "apply_rome": "editsafe.rome",
    "load_edit_requests": "editsafe.edit_data",
    "run_edits": "editsafe.edit_runner",
    # Stage 1 and 2: the layer locator and Harm Direction Removal.
    "locate_edit": "editsafe.locate",
    "train_harm_vector": "editsafe.hdr",
    "compute_task_vector": "editsafe.hdr",
    "remove_harm_direction": "editsafe.hdr",
    "load_harm_vector": "editsafe.hdr",
    # Stage 3: the in-context safety vector and the repair pipeline.
    "compute_icv": "editsafe.icv",
    "steer": "editsafe.icv",
    "repair": "editsafe.repair",
    # Stage 4: generation and evaluation.
    "generate": "editsafe.generation",
    "refusal_margin": "editsafe.evaluation",
    "evaluate": "editsafe.evaluation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'editsafe' has no attribute {name!r}")
