"""Exceptions that videogene raises for bad input.

Library code raises :class:`InputError` with a one-line message that names the file (or
argument) and the problem; ``videogene.cli`` prints it without a traceback.
"""

from __future__ import annotations


class VideogeneError(Exception):
    """Base class of videogene's own errors."""


class InputError(VideogeneError, ValueError):
    """Bad user input: a file, a column, an argument. The message is shown as is."""
