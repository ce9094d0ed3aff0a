"""Exception hierarchy.

Every error that editsafe raises on purpose derives from :class:`EditsafeError`.
The specific errors also subclass the matching builtin, so a caller's existing
``except ValueError`` or ``except LookupError`` keeps working.
"""

from __future__ import annotations


class EditsafeError(Exception):
    """Root of all errors raised by editsafe on purpose."""


class ConfigError(EditsafeError, ValueError):
    """Invalid hyperparameters, options or configuration files."""


class DataError(EditsafeError, ValueError):
    """Malformed input data: the message names the file and the line or row."""


class ModelReferenceError(EditsafeError, LookupError):
    """A model reference that does not resolve to a model."""


class ProvenanceError(EditsafeError, ValueError):
    """Artefacts that were built for different models (hash or shape mismatch)."""


class EditError(EditsafeError, RuntimeError):
    """A knowledge edit that could not be computed or applied."""


class NumericalError(EditsafeError, ArithmeticError):
    """NaN or infinite values where finite values are required."""


class OutputExistsError(EditsafeError, FileExistsError):
    """An output folder that already exists and may not be overwritten."""


class MissingDependencyError(EditsafeError, ImportError):
    """An optional dependency that is needed for the requested feature."""
