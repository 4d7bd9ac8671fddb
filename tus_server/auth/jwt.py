"""JWTs minted by the platform the teachers are logged into.

The platform already knows who the teacher is; it signs a short-lived token (``sub`` = user id)
and the browser sends it as a Bearer token. Two ways to check the signature, chosen per token by
its ``alg`` header but only among the keys configured here: HS256 with a shared secret and RS256
with the platform's public key. The key is picked by ``alg`` and then ``jwt.decode`` is told to
accept only that one algorithm, so ``alg: none`` and the RS256-key-as-HMAC-secret confusion
cannot get through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tus_server.auth.errors import ERR_TOKEN_EXPIRED, ERR_TOKEN_NOT_YET_VALID, ERR_UNKNOWN_TOKEN
from tus_server.auth.principal import Principal


class KeyConfigError(ValueError):
    """A configured key that cannot be used; raised at startup, not on the first request."""


def load_rsa_public_key(value: str, base_dir: Path | None = None) -> RSAPublicKey:
    """PEM text (public key or certificate) inline, or a path to a file holding it; a relative
    path resolves against the config file's folder like every other path in config.toml."""
    text = value.strip()
    if "-----BEGIN" not in text:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        try:
            text = path.read_text(encoding="ascii")
        except OSError as exc:
            raise KeyConfigError(f"[auth] jwt_rs256_public_key: cannot read {path}: {exc.strerror}") from exc
    data = text.encode("ascii")
    try:
        key: Any = (x509.load_pem_x509_certificate(data).public_key()
                    if b"BEGIN CERTIFICATE" in data else load_pem_public_key(data))
    except ValueError as exc:
        raise KeyConfigError("[auth] jwt_rs256_public_key is not a PEM public key or certificate") from exc
    if not isinstance(key, RSAPublicKey):
        raise KeyConfigError("[auth] jwt_rs256_public_key must be an RSA key")
    return key


class JwtVerifier:
    def __init__(self, *, hs256_secret: str = "", rs256_public_key: str = "", issuer: str = "",
                 audience: str = "", leeway: float = 30, role_claim: str = "role",
                 max_size_claim: str = "tusflow_max_size", base_dir: Path | None = None):
        self._keys: dict[str, Any] = {}
        if hs256_secret:
            self._keys["HS256"] = hs256_secret
        if rs256_public_key:
            self._keys["RS256"] = load_rsa_public_key(rs256_public_key, base_dir)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.role_claim = role_claim
        self.max_size_claim = max_size_claim

    def __bool__(self) -> bool:
        return bool(self._keys)

    def verify(self, token: str) -> Principal:
        """The principal the token names, or an AuthError whose message says why not."""
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.InvalidTokenError:
            raise ERR_UNKNOWN_TOKEN("invalid token: not a token this server knows") from None
        alg = header.get("alg")
        key = self._keys.get(alg) if isinstance(alg, str) else None
        if key is None:
            raise ERR_UNKNOWN_TOKEN(f"invalid token: algorithm {str(alg)[:20]!r} is not accepted")
        required = ["exp", "sub"] + (["iss"] if self.issuer else []) + (["aud"] if self.audience else [])
        try:
            claims = pyjwt.decode(token, key, algorithms=[alg], audience=self.audience or None,
                                  issuer=self.issuer or None, leeway=self.leeway,
                                  options={"require": required, "verify_aud": bool(self.audience)})
        except pyjwt.ExpiredSignatureError:
            raise ERR_TOKEN_EXPIRED() from None
        except pyjwt.ImmatureSignatureError:
            raise ERR_TOKEN_NOT_YET_VALID() from None
        except pyjwt.InvalidSignatureError:
            raise ERR_UNKNOWN_TOKEN("invalid token: bad signature") from None
        except pyjwt.InvalidAudienceError:
            raise ERR_UNKNOWN_TOKEN("invalid token: wrong audience") from None
        except pyjwt.InvalidIssuerError:
            raise ERR_UNKNOWN_TOKEN("invalid token: wrong issuer") from None
        except pyjwt.MissingRequiredClaimError as exc:
            raise ERR_UNKNOWN_TOKEN(f"invalid token: missing claim {exc.claim!r}") from None
        except pyjwt.InvalidTokenError as exc:
            raise ERR_UNKNOWN_TOKEN(f"invalid token: {str(exc)[:80]}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise ERR_UNKNOWN_TOKEN("invalid token: sub must name the user")
        return Principal(user=sub, role=self._role(claims.get(self.role_claim)),
                         max_upload_size=self._max_size(claims.get(self.max_size_claim)), via="jwt",
                         expires_at=float(claims["exp"]) + self.leeway)

    @staticmethod
    def _role(value: Any) -> str:
        """A platform's own roles ("teacher", "student") mean nothing here: least privilege."""
        names = value if isinstance(value, list) else [value]
        for role in ("admin", "service"):
            if role in names:
                return role
        return "user"

    def _max_size(self, value: Any) -> int | None:
        """A positive byte count; 0 or absent means only the global limit applies, like
        ``[uploads] max_size = 0`` means no limit."""
        if value is None:
            return None
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ERR_UNKNOWN_TOKEN(f"invalid token: {self.max_size_claim} must be a byte count")
        return value or None
