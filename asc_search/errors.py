"""Errors a user can cause and fix. The CLI prints their message on one line and exits non-zero.

Every message names the file, row or key at fault and what was expected.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["AscSearchError", "ConfigError", "DataError", "CacheError", "BudgetError", "NotFoundError", "QuantizationError",
           "QUOTE_LIMIT",
           "quote", "bound_message"]

#: The most characters an error message quotes of one value (:func:`quote`).
QUOTE_LIMIT = 200
#: The most characters of one error line (:func:`bound_message`); a message is never longer.
MESSAGE_LIMIT = 2000


def _shorten(text: str, limit: int, whole: int | None = None) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({whole or len(text):,} characters in all)"


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, at most about ``limit`` characters: a long string is cut (and says how
    long it was), a large or deeply nested list or mapping shows its first items and levels only. Never builds the
    whole repr of a huge value (a YAML file with aliases can expand to millions of items)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{repr(value[:limit])[:-1]}... ({len(value):,} characters)"
    short = reprlib.Repr()
    short.maxlevel, short.maxdict, short.maxlist, short.maxtuple, short.maxset = 3, 8, 8, 8, 8
    short.maxstring = short.maxother = limit
    short.maxlong = 60
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def bound_message(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` on one line (line breaks become " | ") and at most about ``limit`` characters."""
    text = " | ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())
    return _shorten(text, limit)


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
