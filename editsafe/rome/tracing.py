"""Forward hooks that read or change one module's activations, always removed on exit."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from editsafe.errors import ConfigError


def get_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """Return the submodule called ``name``, or raise ConfigError listing nearby names."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    parent = name.rsplit(".", 1)[0]
    siblings = sorted(n for n in modules if n.startswith(parent + ".") and n.count(".") == name.count("."))
    hint = ", ".join(siblings[:10]) if siblings else ", ".join(sorted(n for n in modules if n.count(".") <= 1)[:10])
    raise ConfigError(f"module {name!r} not found in the model; existing modules include {hint}")


def is_transposed_weight(module: torch.nn.Module) -> bool:
    """Return True for a GPT-2 style Conv1D, which stores its weight as (in_features, out_features)."""
    return type(module).__name__ == "Conv1D"


def output_tensor(output: Any) -> torch.Tensor:
    """Return the hidden states of a module output that is a tensor or a tuple starting with one."""
    return output[0] if isinstance(output, tuple) else output


def _replace_output(output: Any, tensor: torch.Tensor) -> Any:
    return (tensor, *output[1:]) if isinstance(output, tuple) else tensor


@contextlib.contextmanager
def _hooked(module: torch.nn.Module, hook: Callable[..., Any]) -> Iterator[None]:
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def recording(module: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record the module's first positional input (if any) and its output tensor; the last call wins."""
    record: dict[str, torch.Tensor] = {}

    def hook(_module: torch.nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if inputs:
            record["input"] = inputs[0]
        record["output"] = output_tensor(output)

    with _hooked(module, hook):
        yield record


@contextlib.contextmanager
def editing_output(module: torch.nn.Module, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace the module's output tensor by ``edit(output)`` while the block runs."""

    def hook(_module: torch.nn.Module, _inputs: tuple[Any, ...], output: Any) -> Any:
        return _replace_output(output, edit(output_tensor(output)))

    with _hooked(module, hook):
        yield


@contextlib.contextmanager
def rank_one_added(module: torch.nn.Module, u: torch.Tensor, right: torch.Tensor) -> Iterator[None]:
    """Run the module as if its weight had ΔW = right ⊗ u added, without touching the weight.

    For an input x the change of the output is (x · u) right, whatever the
    weight's storage layout.
    """

    def hook(_module: torch.nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        hidden = output_tensor(output)
        change = (inputs[0].to(u.dtype) @ u).unsqueeze(-1) * right
        return _replace_output(output, hidden + change.to(hidden.dtype))

    with _hooked(module, hook):
        yield


@contextlib.contextmanager
def frozen_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Set ``requires_grad`` False on every parameter and put the model in eval mode; restore both on exit."""
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    was_training = model.training
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        model.eval()
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(was_training)
