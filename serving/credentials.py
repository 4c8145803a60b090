"""The serving token: who may send feedback, which request ids this deployment issued, and
which requests go to the canary.

One secret per deployment. In a cluster it comes from a Kubernetes Secret (manifests wire
it into `CT_SERVING_TOKEN`); without one, `ct serve` makes one and keeps it in the home,
readable by its owner only, for local clients such as the demo (as notebook servers do).
Replicas sharing a home share the file, so ids one replica signs verify on another.

From the token, by HMAC-SHA256 with distinct labels:
- feedback callers present the token itself (`Authorization: Bearer <token>`);
- every request id the service issues carries a signature, so feedback for an id the
  service never issued (invented, or altered) is refused;
- the canary's share of request keys is chosen by a keyed hash, so a client cannot pick
  keys that reach the canary.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from components.common.errors import ConfigError

TOKEN_ENV = "CT_SERVING_TOKEN"
SIGNATURE_CHARS = 16  # 64 bits of HMAC: forging one id takes about 2**63 guesses
MIN_TOKEN_CHARS = 16


class ServingToken:
    def __init__(self, token: str):
        if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or token != token.strip():
            raise ConfigError(
                f"the serving token must be at least {MIN_TOKEN_CHARS} printable characters without "
                f"surrounding spaces (got {len(token)} characters)"
            )
        self._bearer = f"Bearer {token}".encode()
        self._signing_key = hmac.digest(token.encode(), b"ct request ids", "sha256")
        self._routing_key = hmac.digest(token.encode(), b"ct canary routing", "sha256")

    @property
    def authorization(self) -> str:
        """The `Authorization` header value a feedback caller sends."""
        return self._bearer.decode()

    def authorizes(self, authorization: str | None) -> bool:
        """True when an `Authorization` header carries this token (compared in constant time)."""
        return authorization is not None and hmac.compare_digest(authorization.encode(), self._bearer)

    def sign(self, request_id: str) -> str:
        """`request_id` with its signature appended: what the service hands out."""
        return f"{request_id}.{self._signature(request_id)}"

    def issued(self, signed_id: str) -> bool:
        """True when `signed_id` is one `sign` made."""
        request_id, _, signature = signed_id.rpartition(".")
        return bool(request_id) and hmac.compare_digest(signature, self._signature(request_id))

    def bucket(self, request_key: str) -> int:
        """0..99 for a request key, unpredictable without the token and stable for the same key."""
        digest = hashlib.blake2b(request_key.encode(), digest_size=8, key=self._routing_key[:32]).digest()
        return int.from_bytes(digest, "big") % 100

    def _signature(self, request_id: str) -> str:
        return hmac.new(self._signing_key, request_id.encode(), "sha256").hexdigest()[:SIGNATURE_CHARS]


def serving_token(token_file: Path, configured: str | None = None) -> ServingToken:
    """The configured token, else the one kept in `token_file`, made there (mode 0600) on first use.

    Raises:
        ConfigError: the configured or kept token is unfit, readable by others, or the file
            cannot be read or made (the path is named).
    """
    if configured:
        return ServingToken(configured)
    try:
        if not token_file.exists():
            _make_token_file(token_file)
        mode = token_file.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{token_file}: the serving token is readable by others (mode {mode:o}); chmod 600 it")
        return ServingToken(token_file.read_text().strip())
    except OSError as error:
        raise ConfigError(f"{token_file}: cannot keep the serving token there: {error.strerror}") from None


def _make_token_file(token_file: Path) -> None:
    """Writes a new token under a private name, then links it into place: replicas starting
    together agree on one token, and no reader ever sees a partial file."""
    token_file.parent.mkdir(parents=True, exist_ok=True)
    partial = token_file.with_name(f".{token_file.name}.{secrets.token_hex(8)}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(32))
    try:
        os.link(partial, token_file)
    except FileExistsError:
        pass  # another replica made it first: its token holds
    finally:
        partial.unlink(missing_ok=True)
