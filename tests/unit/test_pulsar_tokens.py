"""Tokens the operator signs for Pulsar (HS256 JWTs): shape, key handling, renewal decisions.
The real broker accepting them is tests/e2e/test_36_pulsar_tenancy.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from aimodel_operator.pulsar_auth import tokens

KEY = bytes(range(32))


def _part(text: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def test_a_token_is_an_hs256_jwt_with_the_role_as_subject_and_its_expiry():
    token = tokens.mint(KEY, "aimodel:team-a:chat", expires_at=1_900_000_000)
    header, claims, signature = token.split(".")
    assert _part(header) == {"alg": "HS256", "typ": "JWT"}
    assert _part(claims) == {"sub": "aimodel:team-a:chat", "exp": 1_900_000_000}
    expected = hmac.new(KEY, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    assert "=" not in token  # base64url without padding, as RFC 7515 says


def test_a_token_without_expiry_has_no_exp():
    assert _part(tokens.mint(KEY, "admin").split(".")[1]) == {"sub": "admin"}


def test_read_gives_the_claims_of_this_keys_tokens_only():
    token = tokens.mint(KEY, "r", expires_at=5)
    assert tokens.read(token, KEY) == tokens.Claims("r", 5)
    assert tokens.read(token, bytes(32)) is None  # another key
    assert tokens.read(token[:-2], KEY) is None  # damaged
    assert tokens.read("not a token", KEY) is None
    assert tokens.read("a.b.c", KEY) is None


def test_a_token_is_renewed_before_it_expires_or_when_its_role_changed():
    token = tokens.mint(KEY, "r", expires_at=1000)
    assert tokens.still_good(token, KEY, "r", renew_before=100, now=800)
    assert not tokens.still_good(token, KEY, "r", renew_before=100, now=950)
    assert not tokens.still_good(token, KEY, "other", renew_before=100, now=0)
    assert not tokens.still_good(token, bytes(32), "r", renew_before=100, now=0)


def test_the_key_file_may_hold_raw_bytes_or_their_base64():
    assert tokens.load_key(KEY) == KEY
    assert tokens.load_key(base64.b64encode(KEY) + b"\n") == KEY


def test_a_short_key_is_refused_naming_the_size():
    with pytest.raises(tokens.TokenError, match="has 16 bytes; HS256 needs at least 32"):
        tokens.load_key(b"\x00" * 16)
