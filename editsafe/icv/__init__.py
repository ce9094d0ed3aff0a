"""Stage 3: the in-context safety vector (ICV), computed from demonstration pairs and applied by hooks."""

from editsafe.icv.compute import DemonstrationPair, compute_icv, demonstrations_hash, load_demonstrations
from editsafe.icv.hooks import SteeringHandle, install_icv, steer, steer_hidden
from editsafe.icv.install import install_from_safe_folder
from editsafe.icv.vector import SafetyVector

__all__ = [
    "DemonstrationPair", "SafetyVector", "SteeringHandle", "compute_icv", "demonstrations_hash",
    "install_from_safe_folder", "install_icv", "load_demonstrations", "steer", "steer_hidden",
]
