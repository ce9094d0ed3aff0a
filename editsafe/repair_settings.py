"""Safety Arithmetic settings: bundled defaults, per-model overrides and a user's YAML file.

The settings are read in this order, each layer overriding the one before:
``hparams/safety_arithmetic/default.yaml``, then
``hparams/safety_arithmetic/<alias>.yaml`` for the base model's alias when
that file exists, then the user's ``--config`` file, then explicit arguments.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from editsafe.errors import ConfigError
from editsafe.icv.compute import METHODS, TOKENS
from editsafe.icv.hooks import check_strength
from editsafe.icv.sites import SITES
from editsafe.paths import bundled_dir

logger = logging.getLogger(__name__)

HDR_METHODS: tuple[str, ...] = ("ties", "task-vector")


@dataclass(frozen=True)
class RepairSettings:
    """Every setting of one repair; the values are recorded in the safe model's ``editsafe.json``.

    ``k`` is the percentage of harm-vector entries kept by TIES trimming and
    ``lam`` (``lambda`` in YAML) the scale of their subtraction. ``alpha`` and
    ``icv_scale`` multiply into the ICV step; ``icv_method``, ``icv_token`` and
    ``site`` choose how the vector is computed and where it is applied.
    """

    k: float = 10.0
    lam: float = 3.0
    hdr_method: str = "ties"
    alpha: float = 0.12
    icv_scale: float = 0.1
    gate: bool = True
    site: str = "layer"
    icv_method: str = "pca"
    icv_token: str = "last"
    icv_batch_size: int = 8
    chat_template: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.k <= 100:
            raise ConfigError(f"k must be in (0, 100] (percent of harm-vector entries kept), got {self.k}")
        if self.lam < 0:
            raise ConfigError(f"lambda must be zero or positive, got {self.lam}")
        choices = (("hdr_method", self.hdr_method, HDR_METHODS), ("site", self.site, SITES),
                   ("icv_method", self.icv_method, METHODS), ("icv_token", self.icv_token, TOKENS))
        for name, value, allowed in choices:
            if value not in allowed:
                raise ConfigError(f"invalid {name} {value!r}; allowed: {', '.join(allowed)}")
        if self.icv_batch_size < 1:
            raise ConfigError(f"icv_batch_size must be at least 1, got {self.icv_batch_size}")
        check_strength(self.alpha, self.icv_scale)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings with YAML key names (``lambda`` for ``lam``)."""
        values = asdict(self)
        values["lambda"] = values.pop("lam")
        return values


def load_settings(
    alias: str | None = None,
    config: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> RepairSettings:
    """Return the settings for a base model ``alias``, a user ``config`` file and explicit ``overrides``.

    Overrides whose value is None are ignored, so command-line options that
    were not given leave the files' values in place.
    """
    folder = bundled_dir("hparams") / "safety_arithmetic"
    values: dict[str, Any] = {}
    sources = [folder / "default.yaml"]
    if alias:
        sources.append(folder / f"{alias}.yaml")
    for path in sources:
        if path.is_file():
            values.update(_read_yaml(path))
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        values.update(_read_yaml(path))
    values.update({key: value for key, value in overrides.items() if value is not None})
    return _build(values, " + ".join(str(path) for path in sources))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML ({error})") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of setting names to values, got {type(loaded).__name__}")
    return loaded


def _build(values: dict[str, Any], origin: str) -> RepairSettings:
    values = dict(values)
    if "lambda" in values:
        values["lam"] = values.pop("lambda")
    known = {field.name for field in fields(RepairSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        allowed = sorted((known - {"lam"}) | {"lambda"})
        raise ConfigError(f"unknown Safety Arithmetic settings {unknown} (from {origin}); allowed: {', '.join(allowed)}")
    try:
        return replace(RepairSettings(), **values)
    except TypeError as error:
        raise ConfigError(f"invalid Safety Arithmetic settings (from {origin}): {error}") from error
