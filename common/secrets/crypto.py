"""Encryption at rest: Fernet (``cryptography``), several keys for rotation.

``fernet_key`` holds one or more URL-safe base64 keys, comma-separated. The first encrypts; every
one decrypts, so a new key is put first, ``hareflow connections rotate-key`` re-encrypts every row
with it, and the old one can then be dropped. With no ``fernet_key`` configured, the key in
``<home>/fernet.key`` is used (``hareflow standalone`` writes one there, mode 0600, on first start).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from hareflow.common.config import Settings
from hareflow.common.secrets.errors import DecryptFailed, KeyMissing

KEY_FILE = "fernet.key"


def generate_key() -> str:
    return Fernet.generate_key().decode()


class Cipher:
    """Encrypts with the first key, decrypts with any."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise KeyMissing(
                "no Fernet key configured: set HAREFLOW_FERNET_KEY (make one with "
                "`hareflow connections generate-key`) or run `hareflow standalone` once to write "
                f"<home>/{KEY_FILE}"
            )
        fernets = []
        for i, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key.encode()))
            except ValueError:
                raise KeyMissing(
                    f"fernet_key: key {i} of {len(keys)} is not a Fernet key (32 url-safe base64 bytes)"
                ) from None
        self._multi = MultiFernet(fernets)
        self.key_count = len(fernets)

    def encrypt(self, text: str) -> str:
        return self._multi.encrypt(text.encode()).decode()

    def decrypt(self, token: str, what: str) -> str:
        """The plaintext of ``token``; ``what`` names it in the error (``connection 'x' password``)."""
        try:
            return self._multi.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise DecryptFailed(
                f"{what} does not decrypt with the configured Fernet key(s) ({self.key_count}): the key "
                "was changed without rotation? Put the old key after the new one in fernet_key"
            ) from None

    def rotate(self, token: str, what: str) -> str:
        """``token`` re-encrypted with the first key."""
        try:
            return self._multi.rotate(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise DecryptFailed(f"{what} does not decrypt with any configured Fernet key") from None


def configured_keys(settings: Settings) -> list[str]:
    """The keys from ``fernet_key``, else from ``<home>/fernet.key``, else none."""
    text = settings.fernet_key
    if not text:
        path = settings.home / KEY_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise KeyMissing(f"{path}: cannot read the Fernet key file: {exc}") from None
    return [k.strip() for k in text.replace("\n", ",").split(",") if k.strip()]


def cipher_from_settings(settings: Settings) -> Cipher:
    return Cipher(configured_keys(settings))


def ensure_key_file(home: Path) -> Path:
    """Write a new key to ``<home>/fernet.key`` (0600) unless there is one; return its path."""
    path = home / KEY_FILE
    if path.exists():
        return path
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(generate_key() + "\n")
    return path
