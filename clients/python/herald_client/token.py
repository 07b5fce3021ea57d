"""Client tokens for apps that share Herald's HS256 secret
(`HERALD_JWT_SECRET`): a JWT with `sub`, `exp`, `channels` and `publish`,
signed with the standard library alone."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable

#: RFC 7518's floor for HS256 keys; Herald refuses shorter secrets.
MIN_SECRET_BYTES = 32


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint_token(
    secret: str | bytes,
    user: str,
    *,
    channels: Iterable[str] = (),
    publish: Iterable[str] = (),
    ttl: float = 3600,
    now: float | None = None,
) -> str:
    """A token for `user`, valid `ttl` seconds from `now` (default: the
    clock), allowing to subscribe to `channels` and publish to `publish`
    (channel patterns, `*` as a suffix wildcard: ``"chat:*"``). The user's
    personal channel needs no pattern. Give it to the browser or app, which
    sends it in ``connect`` (or as ``Authorization: Bearer`` over SSE/long
    polling) and refreshes it before it expires."""
    key = secret.encode() if isinstance(secret, str) else secret
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"an HS256 secret must be at least {MIN_SECRET_BYTES} bytes (RFC 7518); Herald refuses shorter ones"
        )
    if not user:
        raise ValueError("user must not be empty")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    issued = time.time() if now is None else now
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "sub": user,
        "exp": int(issued + ttl),
        "channels": list(channels),
        "publish": list(publish),
    }
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"
