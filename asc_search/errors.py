"""Errors a user can cause and fix. The CLI prints their message on one line and exits non-zero.

Every message names the file, row or key at fault and what was expected.
"""

from __future__ import annotations

__all__ = [
    "AscSearchError",
    "ConfigError",
    "DataError",
    "CacheError",
    "BudgetError",
    "NotFoundError",
    "QuantizationError",
]


class AscSearchError(Exception):
    """Base class: an error caused by input, not by a bug. ``exit_code`` is what the CLI returns.

    ``params`` names the parameters of the library call the message mentions (e.g. ``("num_samples",)``): library
    messages name parameters, never command-line flags; the CLI rewrites the first mention of each into the flag that
    sets it (``num_samples`` -> ``--num-samples``).
    """

    exit_code = 2

    def __init__(self, message: str = "", *, params: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.params = tuple(params)


class ConfigError(AscSearchError):
    """A configuration or search-space file (or CLI option) holds a bad key or value."""


class DataError(AscSearchError):
    """The data set (meta.csv, fold files, audio) is missing or malformed."""


class CacheError(AscSearchError):
    """A feature or teacher cache is missing, stale, of another profile or does not match its partner."""


class BudgetError(AscSearchError):
    """A model is over the complexity budget where it must not be."""


class NotFoundError(AscSearchError):
    """A named run, trial, export or file does not exist."""


class QuantizationError(AscSearchError):
    """onnxruntime could not quantise or convert a model's graph to its deployed precision (an operator it cannot
    handle, or would silently leave in float; a failure inside it)."""
