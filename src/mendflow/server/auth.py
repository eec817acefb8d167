"""Bearer-token auth for the service's mutating endpoints.

    token = load_token(token_file=None)        # $MENDFLOW_API_TOKEN, or the file's first line
    app = create_app(control, token=token)     # every POST needs "Authorization: Bearer <token>"

The token is compared with ``hmac.compare_digest`` and never printed, logged or echoed: a
refusal says what is missing, never what was sent. Without a configured token every mutating
call is refused, with a message saying how to set one. GETs are open (read-only).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from fastapi import Request

from mendflow.exceptions import ConfigError

ENV = "MENDFLOW_API_TOKEN"
_SCHEME = "bearer"


class Unauthorized(Exception):
    """The request carries no valid token; ``message`` says why (never the token)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def load_token(token_file: str | os.PathLike[str] | None = None) -> str | None:
    """The API token: the first line of ``token_file`` if given, else ``$MENDFLOW_API_TOKEN``
    (None when neither is set); ``ConfigError`` for an unreadable or empty file."""
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the token file {path}: {exc.strerror or exc}; check the path and "
                "its permissions."
            ) from None
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise ConfigError(f"the token file {path} is empty; write the API token in it.")
        return token
    return os.environ.get(ENV) or None


def check(token: str | None, authorization: str | None) -> None:
    """Raise ``Unauthorized`` unless ``authorization`` is ``Bearer <token>``."""
    if not token:
        raise Unauthorized(
            f"no API token is configured, so actions are refused; set {ENV} (or start "
            "`mendflow serve` with --token-file) and send it as 'Authorization: Bearer <token>'."
        )
    if not authorization:
        raise Unauthorized("this action needs a token: send 'Authorization: Bearer <token>'.")
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != _SCHEME or not given.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'.")
    if not hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8")):
        raise Unauthorized("the token is not valid; check MENDFLOW_API_TOKEN.")


def require_token(token: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that refuses a request without a valid bearer token."""

    def dependency(request: Request) -> None:
        check(token, request.headers.get("authorization"))

    return dependency


def is_authorized(token: str | None, authorization: str | None) -> bool:
    """True when ``authorization`` carries the token (for pages that show or hide actions)."""
    try:
        check(token, authorization)
    except Unauthorized:
        return False
    return True


__all__: Sequence[str] = ("ENV", "Unauthorized", "check", "is_authorized", "load_token",
                          "require_token")
