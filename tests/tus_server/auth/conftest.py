"""Fixtures of the auth tests: RSA keys, generated once per session (2048-bit generation is
the slowest thing these tests would otherwise do). Tokens, secrets and JWT makers are in
tests.support.credentials."""

from __future__ import annotations

import pytest

from tests.support.credentials import RsaPair, make_rsa_pair


@pytest.fixture(scope="session")
def rsa_pair() -> RsaPair:
    return make_rsa_pair()


@pytest.fixture(scope="session")
def other_rsa_pair() -> RsaPair:
    return make_rsa_pair()
