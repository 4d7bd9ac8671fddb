"""Static tokens and platform JWTs: each accepted case next to the refusal it must not blur into."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt as pyjwt
import pytest

from tus_server.auth.authenticator import Authenticator
from tus_server.auth.errors import AuthError
from tus_server.auth.jwt import JwtVerifier, KeyConfigError
from tus_server.auth.tokens import StaticTokens, TokenEntry

from tests.support.credentials import HS_SECRET, RsaPair, hs_token, rs_token


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refused(fn, *args) -> AuthError:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthError) as info:
        fn(*args)
    assert info.value.status == 401
    return info.value


# ---------------------------------------------------------------- static tokens
def test_static_token_names_user_and_role() -> None:
    tokens = StaticTokens([TokenEntry("t" * 20, "ci", "service"), TokenEntry("u" * 20, "alice")])
    principal = tokens.lookup("t" * 20)
    assert principal is not None and (principal.user, principal.role, principal.via) == ("ci", "service", "token")
    assert tokens.lookup("u" * 20).role == "user"  # type: ignore[union-attr]


def test_static_token_unknown_or_prefix_is_refused() -> None:
    tokens = StaticTokens([TokenEntry("t" * 20, "ci", "service")])
    assert tokens.lookup("t" * 19) is None
    assert tokens.lookup("t" * 21) is None
    assert tokens.lookup("") is None
    assert Authenticator(tokens).authenticate("t" * 20).user == "ci"
    assert "invalid token" in refused(Authenticator(tokens).authenticate, "x" * 20).message


# ---------------------------------------------------------------- HS256
def hs_verifier(**kw) -> JwtVerifier:  # type: ignore[no-untyped-def]
    return JwtVerifier(hs256_secret=HS_SECRET, leeway=2, **kw)


def test_hs256_good_token() -> None:
    principal = hs_verifier().verify(hs_token("alice", role="admin", tusflow_max_size=1000))
    assert (principal.user, principal.role, principal.max_upload_size, principal.via) == ("alice", "admin", 1000, "jwt")


def test_hs256_expired_token_says_expired() -> None:
    err = refused(hs_verifier().verify, hs_token("alice", ttl=-60))
    assert err.code == "ERR_TOKEN_EXPIRED" and err.message == "token expired"


def test_leeway_tolerates_small_skew_only() -> None:
    assert hs_verifier().verify(hs_token("alice", ttl=-1)).user == "alice"  # 1 s late, leeway 2 s
    refused(hs_verifier().verify, hs_token("alice", ttl=-5))


def test_nbf_in_future_is_refused() -> None:
    err = refused(hs_verifier().verify, hs_token("alice", nbf=int(time.time()) + 300))
    assert err.code == "ERR_TOKEN_NOT_YET_VALID"


def test_hs256_wrong_secret() -> None:
    err = refused(hs_verifier().verify, hs_token("alice", secret="another-secret-0123456789abcdef-0123"))
    assert "bad signature" in err.message


def test_tampered_payload_is_refused() -> None:
    token = hs_token("alice")
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"], claims["role"] = "root", "admin"
    err = refused(hs_verifier().verify, f"{header}.{_b64(claims)}.{sig}")
    assert "bad signature" in err.message


def test_alg_none_is_refused() -> None:
    now = int(time.time())
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'root', 'role': 'admin', 'exp': now + 600})}."
    err = refused(hs_verifier().verify, token)
    assert "not accepted" in err.message
    # ... and the unsigned token is not taken for a static token either
    refused(Authenticator(StaticTokens([]), hs_verifier()).authenticate, token)


def test_missing_exp_or_sub_is_refused() -> None:
    no_exp = pyjwt.encode({"sub": "alice"}, HS_SECRET, algorithm="HS256")
    assert "exp" in refused(hs_verifier().verify, no_exp).message
    no_sub = pyjwt.encode({"exp": int(time.time()) + 60}, HS_SECRET, algorithm="HS256")
    assert "sub" in refused(hs_verifier().verify, no_sub).message


def test_audience_and_issuer_checked_when_configured() -> None:
    verifier = hs_verifier(audience="tusflow", issuer="https://lms.example")
    good = hs_token("alice", aud="tusflow", iss="https://lms.example")
    assert verifier.verify(good).user == "alice"
    assert "audience" in refused(verifier.verify, hs_token("alice", aud="other", iss="https://lms.example")).message
    assert "issuer" in refused(verifier.verify, hs_token("alice", aud="tusflow", iss="https://evil.example")).message
    assert "aud" in refused(verifier.verify, hs_token("alice", iss="https://lms.example")).message


def test_unknown_platform_role_is_plain_user() -> None:
    assert hs_verifier().verify(hs_token("t", role="teacher")).role == "user"
    assert hs_verifier().verify(hs_token("t", role=["teacher", "admin"])).role == "admin"
    assert hs_verifier(role_claim="tf_role").verify(hs_token("t", tf_role="service")).role == "service"
    assert hs_verifier(role_claim="tf_role").verify(hs_token("t", role="admin")).role == "user"


def test_max_size_claim_must_be_a_byte_count() -> None:
    assert hs_verifier().verify(hs_token("t", tusflow_max_size="2048")).max_upload_size == 2048
    assert hs_verifier().verify(hs_token("t", tusflow_max_size=0)).max_upload_size is None
    assert "byte count" in refused(hs_verifier().verify, hs_token("t", tusflow_max_size=-1)).message
    assert "byte count" in refused(hs_verifier().verify, hs_token("t", tusflow_max_size="lots")).message


# ---------------------------------------------------------------- RS256
def test_rs256_inline_pem_and_path(rsa_pair: RsaPair, tmp_path: Path) -> None:
    token = rs_token(rsa_pair, "carol", role="service")
    assert JwtVerifier(rs256_public_key=rsa_pair.public_pem).verify(token).role == "service"
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "platform.pem").write_text(rsa_pair.public_pem)
    by_path = JwtVerifier(rs256_public_key="keys/platform.pem", base_dir=tmp_path)
    assert by_path.verify(token).user == "carol"


def test_rs256_wrong_key_and_expired(rsa_pair: RsaPair, other_rsa_pair: RsaPair) -> None:
    verifier = JwtVerifier(rs256_public_key=rsa_pair.public_pem, leeway=0)
    assert "bad signature" in refused(verifier.verify, rs_token(other_rsa_pair)).message
    assert refused(verifier.verify, rs_token(rsa_pair, ttl=-10)).code == "ERR_TOKEN_EXPIRED"


def test_rs256_key_cannot_be_used_as_hmac_secret(rsa_pair: RsaPair) -> None:
    """The classic alg confusion: HS256 signed with the public key's PEM text."""
    import hashlib
    import hmac
    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64({"sub": "root", "role": "admin", "exp": int(time.time()) + 600})
    sig = hmac.new(rsa_pair.public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    err = refused(JwtVerifier(rs256_public_key=rsa_pair.public_pem).verify, token)
    assert "HS256" in err.message
    # with both configured, HS256 tokens are checked against the secret only
    both = JwtVerifier(rs256_public_key=rsa_pair.public_pem, hs256_secret=HS_SECRET)
    assert "bad signature" in refused(both.verify, token).message
    assert both.verify(hs_token("alice")).user == "alice"
    assert both.verify(rs_token(rsa_pair, "bob")).user == "bob"


def test_unusable_rs256_key_fails_at_startup(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="cannot read"):
        JwtVerifier(rs256_public_key="missing.pem", base_dir=tmp_path)
    with pytest.raises(KeyConfigError, match="not a PEM"):
        JwtVerifier(rs256_public_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


def test_authenticator_prefers_static_then_jwt() -> None:
    auth = Authenticator(StaticTokens([TokenEntry("s" * 20, "ci", "service")]), hs_verifier())
    assert auth.authenticate("s" * 20).user == "ci"
    assert auth.authenticate(hs_token("alice")).user == "alice"
    assert refused(auth.authenticate, "not-a-token-at-all").message == "invalid token"
    assert refused(auth.authenticate, "x" * 9000).message == "invalid token"
