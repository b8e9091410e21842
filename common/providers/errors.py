"""Errors of the built-in hooks: what failed, against which connection, and whether retrying helped."""

from __future__ import annotations


class ProviderError(Exception):
    """A hook could not do what it was asked; the message names the connection and the operation."""


class WrongConnectionType(ProviderError):
    """A hook was given a connection of a type it does not speak (an HTTP connection to SqlHook)."""


class HttpRequestFailed(ProviderError):
    """An HTTP request failed for good: a connection error, a timeout or a 5xx status, after the
    hook's retries. ``status`` is the last status seen (None when no response came)."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts
