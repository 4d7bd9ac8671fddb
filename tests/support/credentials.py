"""Credentials the auth tests use: static API tokens, the shared HS256 secret, the playback
signing key, and JWT makers written from the JWT spec (PyJWT), not from tusflow's code."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HS_SECRET = "platform-shared-secret-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
SERVICE_TOKEN = "service-token-0123456789abcdef"
ALICE_TOKEN = "alice-token-0123456789abcdef"
BOB_TOKEN = "bob-token-0123456789abcdef0000"
SIGNING_KEY = "playback-signing-key-0123456789abcdef"

TOKENS = [
    {"token": ADMIN_TOKEN, "user": "root", "role": "admin"},
    {"token": SERVICE_TOKEN, "user": "platform", "role": "service"},
    {"token": ALICE_TOKEN, "user": "alice", "role": "user"},
    {"token": BOB_TOKEN, "user": "bob", "role": "user"},
]


@dataclass(frozen=True)
class RsaPair:
    private_pem: bytes
    public_pem: str


def make_rsa_pair() -> RsaPair:
    """A fresh 2048-bit pair: slow (about a second), so the auth fixtures make one a session."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return RsaPair(private, public)


def hs_token(sub: str = "alice", secret: str = HS_SECRET, ttl: float = 600, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl), **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def rs_token(pair: RsaPair, sub: str = "alice", ttl: float = 600, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl), **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, pair.private_pem, algorithm="RS256")
