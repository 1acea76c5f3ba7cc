"""Bearer-token authentication for receivers and the admin API.

The token comes from an environment variable or a file, is compared in constant time, and never
appears in a log line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from .config import BearerAuth
from .errors import ConfigError


class BearerAuthenticator:
    def __init__(self, token: str) -> None:
        if not token:
            raise ConfigError("the bearer token is empty")
        # Digests are compared, not the tokens: equal lengths, so the comparison time says nothing
        # about the token, not even its length.
        self._expected = _digest(token.encode())
        self._header = f"Bearer {token}"  # what a client presents (the fleet's samplers)

    @classmethod
    def from_config(
        cls, auth: BearerAuth | None, environ: Mapping[str, str] = os.environ
    ) -> BearerAuthenticator | None:
        if auth is None:
            return None
        if auth.bearer_token_env:
            token = environ.get(auth.bearer_token_env, "").strip()
            if not token:
                raise ConfigError(f"auth: environment variable {auth.bearer_token_env} is unset or empty")
            return cls(token)
        if auth.bearer_token_file:
            try:
                token = auth.bearer_token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"auth: cannot read bearer_token_file {auth.bearer_token_file}: {exc}"
                ) from None
            return cls(token)
        return None

    @property
    def header(self) -> str:
        """The Authorization header value a client presents (the fleet's samplers send it)."""
        return self._header

    def accepts(self, authorization: str | bytes | None) -> bool:
        """True when the Authorization header value is `Bearer <the token>` (the scheme in any case)."""
        if authorization is None:
            return False
        value = authorization.encode("utf-8", "replace") if isinstance(authorization, str) else authorization
        scheme, _, credentials = value.strip().partition(b" ")
        matches = hmac.compare_digest(_digest(credentials.strip()), self._expected)
        return matches and scheme.lower() == b"bearer"


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()
