"""Pulsar's token authentication: HS256 JWTs whose ``sub`` is the role, with an ``exp``.

Written on the standard library rather than with PyJWT: the operator only signs tokens with a
symmetric key (never verifies one from elsewhere, never handles another algorithm), which is a
base64url of two small JSON documents and one HMAC; PyJWT would be one more dependency in
every operator process for these few lines. The real broker checks what this signs
(tests/e2e/test_36_pulsar_tenancy.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

# Pulsar refuses HS256 keys shorter than this (the broker fails at start).
MIN_KEY_BYTES = 32
_HEADER = {"alg": "HS256", "typ": "JWT"}


class TokenError(ValueError):
    """A signing key or a token that cannot be used; the message names what is wrong."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def load_key(raw: bytes) -> bytes:
    """The signing key from a file as Pulsar's tools write it: raw bytes
    (``pulsar tokens create-secret-key --output``), or their standard base64 (``--base64``,
    the ``data:;base64,`` form's payload)."""
    text = raw.strip()
    key = raw
    if text and all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=" for c in text):
        try:
            key = base64.b64decode(text, validate=True)
        except binascii.Error:
            key = raw
    if len(key) < MIN_KEY_BYTES:
        raise TokenError(f"the Pulsar token signing key has {len(key)} bytes; HS256 needs at least {MIN_KEY_BYTES}")
    return key


def mint(key: bytes, role: str, expires_at: int | None = None) -> str:
    """A token for ``role``; ``expires_at`` in epoch seconds (None: it never expires)."""
    claims: dict[str, object] = {"sub": role}
    if expires_at is not None:
        claims["exp"] = int(expires_at)
    signing_input = f"{_b64url(_json(_HEADER))}.{_b64url(_json(claims))}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


@dataclass(frozen=True)
class Claims:
    role: str
    expires_at: int | None


def read(token: str, key: bytes) -> Claims | None:
    """The claims of a token this key signed; None when it is not one (another key, damaged)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64url(parts[2])):
            return None
        claims = json.loads(_unb64url(parts[1]))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        return None
    exp = claims.get("exp")
    return Claims(claims["sub"], exp if isinstance(exp, int) else None)


def still_good(token: str, key: bytes, role: str, renew_before: float, now: float | None = None) -> bool:
    """``token`` is this key's, for ``role``, and not within ``renew_before`` seconds of expiring."""
    claims = read(token, key)
    if claims is None or claims.role != role:
        return False
    now = time.time() if now is None else now
    return claims.expires_at is None or claims.expires_at - now > renew_before
