"""Secrets kept encrypted at rest (a buyer trunk's password): Fernet (AES-128-CBC + HMAC-SHA256) from
``cryptography``, with a key given as a Fernet key or derived from a longer secret by HKDF-SHA256."""

from __future__ import annotations

import base64
import binascii

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SecretBoxError(Exception):
    """A sealed secret that this key cannot open (another key, or damaged)."""


class SecretBox:
    """Seal and open short secrets; the plain text exists only in memory."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_secret(cls, secret: str, *, purpose: str = "dce target credentials") -> SecretBox:
        """A Fernet key (urlsafe base64 of 32 bytes) as it is; any other secret (>= 16 bytes) through HKDF."""
        try:
            if len(base64.urlsafe_b64decode(secret.encode())) == 32:
                return cls(secret.encode())
        except (binascii.Error, ValueError):
            pass
        if len(secret.encode()) < 16:
            raise ValueError("the credentials key must be a Fernet key or a secret of at least 16 bytes")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret.encode())
        return cls(base64.urlsafe_b64encode(derived))

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretBoxError("cannot open a sealed secret with this key") from None
