"""Applying the in-context safety vector with forward hooks.

At every position of every layer l in the vector, with ĥ = h / ||h|| and û_l
the unit segment of layer l:

    h' = normalize(ĥ + s · g · û_l) · ||h||,   s = icv_scale × alpha,
    g = 1 + max(0, −cos(h, û_l))  (or g = 1 with the gate off).

The update is a rotation of h towards û_l that keeps ||h||; the gate pushes up
to twice as hard on states that point away from û_l (Hazra et al., "Safety
Arithmetic", 2024). The update acts on each position on its own, so it gives
the same result with or without the key-value cache and under left padding.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from editsafe.errors import ConfigError
from editsafe.icv.sites import SITES, Site, hidden_of, site_modules, with_hidden
from editsafe.icv.vector import SafetyVector

logger = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.12
DEFAULT_ICV_SCALE = 0.1
# Above this step size s = icv_scale × alpha, the gated step s·g can reach 1 or more, which turns a
# state opposite to û_l by 45 degrees or more at once; models then usually stop producing fluent text.
STEP_WARNING_BOUND = 0.5


@dataclass
class SteeringHandle:
    """The forward hooks of one installed safety vector; :meth:`remove` takes them all out."""

    vector: SafetyVector
    alpha: float
    icv_scale: float
    gate: bool
    site: str
    hooks: list[Any] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """True while the hooks are installed."""
        return bool(self.hooks)

    def settings(self) -> dict[str, Any]:
        """Return the steering settings as recorded in a safe model's ``editsafe.json``."""
        return {"alpha": self.alpha, "icv_scale": self.icv_scale, "gate": self.gate, "site": self.site,
                "layers": list(self.vector.layers)}

    def remove(self) -> None:
        """Remove every hook; calling it again does nothing."""
        while self.hooks:
            self.hooks.pop().remove()


def steer_hidden(hidden: torch.Tensor, direction: torch.Tensor, step: float, *, gate: bool = True) -> torch.Tensor:
    """Rotate every vector of ``hidden`` (last dimension) towards ``direction``, keeping its norm.

    Computed in float32 and cast back to ``hidden``'s dtype. A zero state stays zero.
    """
    states = hidden.to(torch.float32)
    unit = direction.to(device=states.device, dtype=torch.float32)
    norms = states.norm(dim=-1, keepdim=True)
    unit_states = states / norms.clamp_min(torch.finfo(torch.float32).tiny)

    weight = torch.full_like(norms, step)
    if gate:
        cosine = (unit_states * unit).sum(dim=-1, keepdim=True)
        weight = weight * (1.0 + torch.clamp(-cosine, min=0.0))

    moved = unit_states + weight * unit
    moved = moved / moved.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return (moved * norms).to(hidden.dtype)


def check_strength(alpha: float, icv_scale: float) -> float:
    """Validate ``alpha`` and ``icv_scale`` and return the step s = icv_scale × alpha; warn when s is large."""
    if not (alpha >= 0):
        raise ConfigError(f"alpha must be zero or positive, got {alpha}; a negative alpha steers towards the unsafe side")
    if not (icv_scale >= 0):
        raise ConfigError(f"icv_scale must be zero or positive, got {icv_scale}")
    step = alpha * icv_scale
    if step > STEP_WARNING_BOUND:
        logger.warning(
            "ICV step icv_scale × alpha = %.3g is above %.2g: hidden states can turn by 45 degrees or more "
            "and the model may stop producing fluent text", step, STEP_WARNING_BOUND,
        )
    return step


def install_icv(
    model: Any,
    vector: SafetyVector,
    *,
    alpha: float = DEFAULT_ALPHA,
    icv_scale: float = DEFAULT_ICV_SCALE,
    gate: bool = True,
    site: Site | None = None,
) -> SteeringHandle:
    """Install forward hooks that steer ``model`` with ``vector`` and return their handle.

    ``site`` defaults to the site the vector was read from. With a step of zero
    (alpha or icv_scale zero) no hook is installed, so the model's outputs stay
    bit-identical. The caller removes the hooks with ``handle.remove()``; prefer
    :func:`steer`, which always removes them.
    """
    site = site or vector.site  # type: ignore[assignment]
    if site not in SITES:
        raise ConfigError(f"unknown ICV site {site!r}; allowed: {', '.join(SITES)}")
    step = check_strength(alpha, icv_scale)
    modules = site_modules(model, vector.layers, site)  # type: ignore[arg-type]
    hidden_size = model.config.hidden_size
    if vector.hidden_size != hidden_size:
        raise ConfigError(
            f"the safety vector has width {vector.hidden_size} but the model's hidden size is {hidden_size}; "
            "compute the vector on this model"
        )

    handle = SteeringHandle(vector=vector, alpha=alpha, icv_scale=icv_scale, gate=gate, site=site)
    if step == 0:
        return handle
    for layer, module in modules.items():
        direction = vector.segments[layer]

        def hook(_module: Any, _inputs: Any, output: Any, direction: torch.Tensor = direction) -> Any:
            return with_hidden(output, steer_hidden(hidden_of(output), direction, step, gate=gate))

        handle.hooks.append(module.register_forward_hook(hook))
    logger.debug("installed the ICV at %s outputs of layers %s (step %.4g, gate %s)", site, vector.layers, step, gate)
    return handle


@contextlib.contextmanager
def steer(model: Any, vector: SafetyVector, **settings: Any) -> Iterator[SteeringHandle]:
    """Steer ``model`` with ``vector`` inside the block; the hooks are removed on exit, also after an error.

    ``settings`` are those of :func:`install_icv`.
    """
    handle = install_icv(model, vector, **settings)
    try:
        yield handle
    finally:
        handle.remove()
