"""Keys and token makers shared by the auth tests. RSA keys are generated once per session:
2048-bit generation is the slowest thing these tests would otherwise do."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
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


def _pair() -> RsaPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return RsaPair(private, public)


@pytest.fixture(scope="session")
def rsa_pair() -> RsaPair:
    return _pair()


@pytest.fixture(scope="session")
def other_rsa_pair() -> RsaPair:
    return _pair()


def hs_token(sub: str = "alice", secret: str = HS_SECRET, ttl: float = 600, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl), **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def rs_token(pair: RsaPair, sub: str = "alice", ttl: float = 600, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl), **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, pair.private_pem, algorithm="RS256")
