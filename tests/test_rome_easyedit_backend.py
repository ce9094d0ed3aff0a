"""The easyedit backend without EasyEdit installed, and its rank-one factorisation."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from editsafe.errors import MissingDependencyError
from editsafe.rome.easyedit_backend import _rank_one_factors, import_easyedit


@pytest.mark.skipif(importlib.util.find_spec("easyeditor") is not None, reason="EasyEdit is installed")
def test_missing_easyedit_named() -> None:
    with pytest.raises(MissingDependencyError, match="easyeditor.*separate environment"):
        import_easyedit()


@pytest.mark.parametrize("transposed", [False, True])
def test_factors_rebuild_difference(transposed: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(12, generator=generator)
    u = u / u.norm()
    right = torch.randn(5, generator=generator)
    difference = torch.outer(u, right) if transposed else torch.outer(right, u)
    patch = _rank_one_factors(difference, "w.weight", 3, transposed)
    assert torch.allclose(patch.delta(), difference, atol=1e-6)
    assert patch.u.norm().item() == pytest.approx(1.0, abs=1e-6)
