"""The one exception type for errors a user can cause.

A `VistuneError` message names the file / record / key at fault and says what to do about it. The CLI prints it
without a traceback and exits non-zero; library callers can catch it.
"""

from __future__ import annotations


class VistuneError(Exception):
    """An error caused by user input (files, records, config, arguments), with a message that says how to fix it."""


class AllMaskedError(VistuneError):
    """A record's labels are all masked (no assistant token survives), so it must not be trained on."""
