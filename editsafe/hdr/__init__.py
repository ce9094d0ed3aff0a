"""Harm Direction Removal: the harm vector τ_H, TIES trimming and θ_int = θ_t − λ·τ_H'."""

from editsafe.hdr.apply import remove_harm_direction
from editsafe.hdr.harm import train_harm_vector
from editsafe.hdr.harm_vector import HarmVector, StoredHarmVector, load_harm_vector
from editsafe.hdr.task_vector import compute_task_vector

__all__ = [
    "HarmVector", "StoredHarmVector", "compute_task_vector", "load_harm_vector", "remove_harm_direction",
    "train_harm_vector",
]
