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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'editsafe' has no attribute {name!r}")
