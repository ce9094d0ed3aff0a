"""Installing the safety vector stored in a safe-model folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from editsafe.errors import ModelReferenceError
from editsafe.icv.hooks import DEFAULT_ALPHA, DEFAULT_ICV_SCALE, SteeringHandle, install_icv
from editsafe.icv.vector import ICV_SUBFOLDER, SafetyVector


def install_from_safe_folder(model: Any, folder: str | os.PathLike[str], manifest: dict[str, Any]) -> SteeringHandle:
    """Install the ICV of a safe-model folder on ``model`` with the settings in its ``editsafe.json``.

    ``manifest["icv"]`` contains ``alpha``, ``icv_scale``, ``gate`` and ``site``;
    the vector is stored in the folder's ``icv/`` subfolder, outside the
    top-level ``*.safetensors`` files that hold the weights.
    """
    settings = manifest.get("icv")
    if not settings:
        raise ModelReferenceError(f"{folder}: the safe model has no ICV (its editsafe.json has icv: null)")
    vector = SafetyVector.load(Path(folder) / ICV_SUBFOLDER)
    return install_icv(
        model, vector, alpha=float(settings.get("alpha", DEFAULT_ALPHA)),
        icv_scale=float(settings.get("icv_scale", DEFAULT_ICV_SCALE)), gate=bool(settings.get("gate", True)),
        site=settings.get("site", vector.site),
    )
