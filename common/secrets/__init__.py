"""Connections, Variables and their secrets: storage, lookup chain, masking.

See ``connection`` (the objects and their URI form), ``crypto`` (Fernet at rest), ``store`` (the
metastore tables), ``backends`` (the lookup chain), ``client`` (where task code looks) and
``masking`` (``***`` in everything a task sends out).
"""

from hareflow.common.secrets.connection import Connection, Variable, connection_from_text
from hareflow.common.secrets.errors import (
    AccessDenied,
    ConnectionNotFound,
    DecryptFailed,
    KeyMissing,
    LookupUnavailable,
    SecretsError,
    VariableNotFound,
)

__all__ = [
    "AccessDenied",
    "Connection",
    "ConnectionNotFound",
    "DecryptFailed",
    "KeyMissing",
    "LookupUnavailable",
    "SecretsError",
    "Variable",
    "VariableNotFound",
    "connection_from_text",
]
