"""What can go wrong reaching a connection or a variable: one small hierarchy.

Every message names the connection id or variable key and what to do; none ever holds a secret.
"""

from __future__ import annotations


class SecretsError(ValueError):
    """Base: a connection or variable that is malformed, missing or cannot be read."""


class ConnectionNotFound(SecretsError, KeyError):
    """No backend defines this connection."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class VariableNotFound(SecretsError, KeyError):
    """No backend defines this variable (and the caller gave no default)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AccessDenied(SecretsError):
    """The connection exists but the asking DAG may not read it (its allow-list)."""


class KeyMissing(SecretsError):
    """No Fernet key is configured, so nothing can be stored or read encrypted."""


class DecryptFailed(SecretsError):
    """A stored value does not decrypt with any configured Fernet key."""


class LookupUnavailable(SecretsError):
    """The control plane did not answer a task's lookup in time (recoverable: a retry may work)."""
