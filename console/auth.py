"""Access to the console: one seam, so that a later issue can swap in scoped API keys.

Reads are open to loopback clients (``console.open_reads_on_loopback``); anything that changes
state needs the admin token, sent as ``Authorization: Bearer <token>``. The token comes from
``console.admin_token_file`` or the environment variable ``console.admin_token_env``, never from
the YAML itself. With no token configured, every change is refused and the answer says how to set one.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path
from typing import Protocol

from fastapi import Request

from console.errors import Unauthorized
from schemas.config import ConsoleSettings


class Authorizer(Protocol):
    @property
    def configured(self) -> bool:
        """Whether changes can be allowed at all (an admin token is set)."""
        ...

    def require_reader(self, request: Request) -> None: ...

    def require_admin(self, request: Request) -> None: ...


def load_admin_token(settings: ConsoleSettings) -> str | None:
    """The configured admin token, or None. A token file that cannot be read is an error, not 'no token'."""
    if settings.admin_token_file:
        path = Path(settings.admin_token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise Unauthorized(f"console.admin_token_file {path}: cannot read: {exc}") from exc
        return token or None
    return os.environ.get(settings.admin_token_env, "").strip() or None


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    if host in ("localhost", "testclient"):  # Starlette's test client names itself so
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenAuthorizer:
    """One admin token for every change; reads open on loopback."""

    def __init__(self, token: str | None, open_reads_on_loopback: bool = True, token_hint: str = "") -> None:
        self._token = token
        self._open_reads = open_reads_on_loopback
        self._hint = token_hint or "set console.admin_token_file or the variable named by console.admin_token_env"

    @classmethod
    def from_settings(cls, settings: ConsoleSettings) -> TokenAuthorizer:
        hint = (
            f"put it in {settings.admin_token_file}"
            if settings.admin_token_file
            else f"set the environment variable {settings.admin_token_env} before starting"
        )
        return cls(load_admin_token(settings), settings.open_reads_on_loopback, hint)

    @property
    def configured(self) -> bool:
        return self._token is not None

    def _valid(self, request: Request) -> bool:
        given = _bearer(request)
        return self._token is not None and given is not None and hmac.compare_digest(given, self._token)

    def require_reader(self, request: Request) -> None:
        if (self._open_reads and is_loopback(request)) or self._valid(request):
            return
        raise Unauthorized("reading the console from another host needs the admin token")

    def require_admin(self, request: Request) -> None:
        if self._token is None:
            raise Unauthorized(f"no admin token is configured, so changes are refused: {self._hint}")
        if _bearer(request) is None:
            raise Unauthorized("this action changes state: it needs the admin token (Authorization: Bearer ...)")
        if not self._valid(request):
            raise Unauthorized("the admin token is wrong")
