"""Locations of the cache folder and of the bundled hyperparameters and data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PACKAGE_ROOT = Path(__file__).resolve().parent


def editsafe_home() -> Path:
    """Return the cache folder: ``$EDITSAFE_HOME`` or ``~/.cache/editsafe``."""
    configured = os.environ.get("EDITSAFE_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "editsafe"


def bundled_dir(name: str) -> Path:
    """Return a bundled top-level folder (``hparams`` or ``edits``).

    A source checkout or editable install reads it from the repository root; a
    wheel install reads the copy under ``<prefix>/share/editsafe``.
    """
    candidates = [_PACKAGE_ROOT.parent / name, Path(sys.prefix) / "share" / "editsafe" / name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def package_data(name: str) -> Path:
    """Return a file shipped inside the package under ``editsafe/data``."""
    return _PACKAGE_ROOT / "data" / name
