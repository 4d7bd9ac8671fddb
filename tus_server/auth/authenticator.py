"""Bearer token → Principal, trying static API tokens first and then JWTs.

Static tokens are checked first because they are a constant-time table lookup; only a value
shaped like a JWT (three dot-separated parts) is handed to the JWT verifier, so a mistyped API
token is reported as unknown rather than as a malformed JWT.
"""

from __future__ import annotations

from tus_server.auth.errors import ERR_UNKNOWN_TOKEN
from tus_server.auth.jwt import JwtVerifier
from tus_server.auth.principal import Principal
from tus_server.auth.tokens import StaticTokens

_MAX_TOKEN = 8192


class Authenticator:
    def __init__(self, tokens: StaticTokens, jwt: JwtVerifier | None = None):
        self.tokens = tokens
        self.jwt = jwt

    def authenticate(self, token: str) -> Principal:
        token = token.strip()
        if not token or len(token) > _MAX_TOKEN:
            raise ERR_UNKNOWN_TOKEN()
        principal = self.tokens.lookup(token)
        if principal is not None:
            return principal
        if self.jwt and token.count(".") == 2:
            return self.jwt.verify(token)
        raise ERR_UNKNOWN_TOKEN()
