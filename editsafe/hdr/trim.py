"""TIES trimming: keep exactly the top k% of harm-vector entries by magnitude.

Trimming follows TIES-Merging (Yadav et al., NeurIPS 2023): of the N masked
entries of τ_H, the K = ⌈k/100 · N⌉ with the largest |τ_H| survive and the
rest become zero. The K-th largest magnitude is found exactly while
streaming, with a two-pass radix selection on the float32 bit pattern (for
non-negative floats the bit pattern, read as an integer, orders like the
value): pass one counts magnitudes per upper 16 bits (65,536 bins), pass two
counts the lower 16 bits inside the one bin that contains the K-th entry. Memory
is two histograms, whatever the model size.

Ties: entries equal to the threshold are kept in a deterministic order, the
order in which the masked tensors are visited and then flat (row-major) index
order, until exactly K entries survive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

import torch

from editsafe.errors import ConfigError, NumericalError

_BINS = 1 << 16


def kept_count(total: int, k: float) -> int:
    """Return K = ⌈k/100 · total⌉, computed exactly (k as its decimal value)."""
    if not 0 < k <= 100:
        raise ConfigError(f"k must be a percentage in (0, 100], got {k}")
    return math.ceil(Fraction(str(k)) * total / 100)


def magnitude_bits(values: torch.Tensor) -> torch.Tensor:
    """Return |values| in float32 as int32 bit patterns (monotonic in the magnitude)."""
    return values.to(torch.float32).abs().contiguous().view(torch.int32)


@dataclass(frozen=True)
class Threshold:
    """An exact top-K selection: keep entries whose magnitude bits exceed ``bits``, plus ``ties_kept`` ties.

    ``value`` is the K-th largest magnitude. ``above`` entries are strictly
    larger; of the ``ties`` entries equal to it, the first ``ties_kept`` in
    visiting order survive, so ``above + ties_kept == kept``.
    """

    bits: int
    value: float
    kept: int
    above: int
    ties: int
    ties_kept: int
    total: int

    @staticmethod
    def keep_all(total: int) -> Threshold:
        """Return the selection that keeps every entry (k = 100)."""
        return Threshold(bits=-1, value=0.0, kept=total, above=total, ties=0, ties_kept=0, total=total)


def find_threshold(blocks: Callable[[], Iterable[torch.Tensor]], k: float) -> Threshold:
    """Select the top k% of all entries of ``blocks()`` by magnitude with one global threshold.

    ``blocks`` is called twice and must yield the same float blocks in the
    same order both times. Raises :class:`NumericalError` on NaN or infinite
    entries.
    """
    # Pass one: histogram of the upper 16 bits.
    upper = torch.zeros(_BINS, dtype=torch.int64)
    total = 0
    for block in blocks():
        if not torch.isfinite(block).all():
            raise NumericalError("the harm vector contains NaN or infinite values; recompute it")
        bits = magnitude_bits(block).reshape(-1)
        upper += torch.bincount(bits >> 16, minlength=_BINS)
        total += bits.numel()
    if total == 0:
        raise ConfigError("the harm vector has no entries inside the region; nothing to trim")
    kept = kept_count(total, k)
    if kept == total:
        return Threshold.keep_all(total)

    # The bin holding the K-th largest entry, counting from the top.
    upper_from_top = torch.cumsum(upper.flip(0), 0)
    bin_from_top = int(torch.searchsorted(upper_from_top, torch.tensor(kept)).item())
    high = _BINS - 1 - bin_from_top
    above_bin = int(upper_from_top[bin_from_top - 1].item()) if bin_from_top > 0 else 0

    # Pass two: histogram of the lower 16 bits inside that bin.
    lower = torch.zeros(_BINS, dtype=torch.int64)
    for block in blocks():
        bits = magnitude_bits(block).reshape(-1)
        inside = bits[(bits >> 16) == high]
        lower += torch.bincount(inside & 0xFFFF, minlength=_BINS)
    lower_from_top = torch.cumsum(lower.flip(0), 0)
    needed = kept - above_bin
    low_from_top = int(torch.searchsorted(lower_from_top, torch.tensor(needed)).item())
    low = _BINS - 1 - low_from_top
    above = above_bin + (int(lower_from_top[low_from_top - 1].item()) if low_from_top > 0 else 0)

    bits_value = (high << 16) | low
    value = torch.tensor([bits_value], dtype=torch.int32).view(torch.float32).item()
    return Threshold(
        bits=bits_value, value=value, kept=kept, above=above, ties=int(lower[low].item()),
        ties_kept=kept - above, total=total,
    )


class Trimmer:
    """Apply a :class:`Threshold` to blocks visited in the same order as during selection."""

    def __init__(self, threshold: Threshold) -> None:
        self.threshold = threshold
        self.ties_remaining = threshold.ties_kept
        self.kept = 0
        self.nonzero_kept = 0

    def trim(self, block: torch.Tensor) -> torch.Tensor:
        """Return ``block`` (float32) with the entries below the threshold set to zero."""
        block = block.to(torch.float32)
        if self.threshold.bits < 0:
            keep = torch.ones_like(block, dtype=torch.bool)
        else:
            bits = magnitude_bits(block)
            keep = bits > self.threshold.bits
            ties = bits == self.threshold.bits
            tie_count = int(ties.sum().item())
            if tie_count:
                if tie_count <= self.ties_remaining:
                    keep |= ties
                    self.ties_remaining -= tie_count
                elif self.ties_remaining > 0:
                    flat_ties = ties.reshape(-1)
                    positions = torch.nonzero(flat_ties).reshape(-1)[: self.ties_remaining]
                    chosen = torch.zeros_like(flat_ties)
                    chosen[positions] = True
                    keep |= chosen.reshape(block.shape)
                    self.ties_remaining = 0
        self.kept += int(keep.sum().item())
        trimmed = torch.where(keep, block, torch.zeros((), dtype=torch.float32))
        self.nonzero_kept += int((trimmed != 0).sum().item())
        return trimmed
