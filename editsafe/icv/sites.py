"""Where the safety vector is read and applied: decoder-layer outputs or MLP outputs.

Decoder layers return a tuple whose first element is the hidden state in
transformers 4 and a bare tensor in transformers 5 (Llama); GPT-2 blocks still
return tuples. :func:`hidden_of` and :func:`with_hidden` handle both forms, so
nothing else needs to know which one a model uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch

from editsafe.errors import ConfigError
from editsafe.models.architectures import architecture_for, num_layers

Site = Literal["layer", "mlp"]
SITES: tuple[str, ...] = ("layer", "mlp")


def site_modules(model: Any, layers: Sequence[int], site: Site) -> dict[int, torch.nn.Module]:
    """Return the module whose output is read or steered at ``site`` for each layer index."""
    architecture = architecture_for(model.config.model_type)
    if site == "layer":
        template = architecture.layer_module_tmp
    elif site == "mlp":
        template = architecture.mlp_module_tmp
    else:
        raise ConfigError(f"unknown ICV site {site!r}; allowed: {', '.join(SITES)}")

    total = num_layers(model.config)
    modules: dict[int, torch.nn.Module] = {}
    for layer in layers:
        if not 0 <= int(layer) < total:
            raise ConfigError(f"layer {layer} is outside the model's {total} decoder layers (0 to {total - 1})")
        modules[int(layer)] = model.get_submodule(template.format(int(layer)))
    return modules


def hidden_of(output: Any) -> torch.Tensor:
    """Return the hidden-state tensor of a module output (a bare tensor or a tuple starting with it)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find the hidden state in a module output of type {type(output).__name__}")


def with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """Return ``output`` with its hidden-state tensor replaced by ``hidden``, in the same form."""
    if isinstance(output, torch.Tensor):
        return hidden
    return (hidden, *output[1:])


@contextlib.contextmanager
def record_outputs(model: Any, layers: Sequence[int], site: Site) -> Iterator[dict[int, torch.Tensor]]:
    """Store the hidden state that each site module in ``layers`` outputs, keyed by layer; hooks removed on exit."""
    outputs: dict[int, torch.Tensor] = {}
    handles = []
    try:
        for layer, module in site_modules(model, layers, site).items():
            def store(_module: Any, _inputs: Any, output: Any, layer: int = layer) -> None:
                outputs[layer] = hidden_of(output).detach()

            handles.append(module.register_forward_hook(store))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
