"""Google service-account access tokens for `gemini` endpoints on Vertex AI, through google-auth, the
maintained library: the key from the Secret signs its own short-lived token (a self-signed JWT, as
Google's client libraries do for Vertex AI), so no token endpoint is called on the request path.

google-auth is imported only when a config has such an endpoint. A token is kept until a few minutes
before it expires, per key (a rotated key is a new key: its token is made anew).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
REFRESH_MARGIN_SECONDS = 300.0


class ServiceAccountError(ValueError):
    """A gemini credential that is no service-account key; the message never holds the key."""


class VertexTokens:
    """Bearer tokens per service-account key (the Secret's text)."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._credentials: dict[str, Any] = {}

    def token(self, key_text: str) -> str:
        digest = hashlib.sha256(key_text.encode()).hexdigest()
        cached = self._tokens.get(digest)
        now = time.time()
        if cached is not None and cached[1] - REFRESH_MARGIN_SECONDS > now:
            return cached[0]
        credentials = self._credentials.get(digest)
        if credentials is None:
            credentials = self._credentials[digest] = _credentials(key_text)
            self._credentials = {digest: credentials}  # the previous key rotated out
            self._tokens = {k: v for k, v in self._tokens.items() if k == digest}
        credentials.refresh(None)  # self-signed: refresh signs locally, it makes no request
        expiry = credentials.expiry.timestamp() if credentials.expiry else now + 3600
        token = str(credentials.token)
        self._tokens[digest] = (token, expiry)
        return token


def _credentials(key_text: str) -> Any:
    from google.oauth2 import service_account

    try:
        info = json.loads(key_text)
        credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
    except (ValueError, KeyError, TypeError):
        raise ServiceAccountError("the gemini credential is not a service-account key (JSON)") from None
    return credentials.with_always_use_jwt_access(True)
