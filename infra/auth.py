"""HTTP authentication for every server of the project: bearer API keys with scopes (FastAPI).

    auth = Authenticator.from_settings(cfg.auth)
    auth.check_bind(cfg.inference.host, "inference.host")        # refuses 0.0.0.0 without keys
    @api.post("/v1/chat/completions", dependencies=[auth.require("infer", user="body")])

* ``Authorization: Bearer <token>``: what the ``openai`` client sends with ``api_key=<token>``. Only
  the sha256 of each token is known here (``schemas/keys.py``).
* ``require(scope, user=...)`` is a route dependency: ``user="body"`` checks the request body's
  ``user`` field, ``"path"`` the ``user_id`` path parameter, ``"all"`` marks routes that list every
  user (restricted keys are refused). A restricted key acting outside its users gets 403.
* Failures are counted (``samtuner_auth_failures_total{reason}``) and answered with fixed messages
  that say nothing about any user: 401 for a missing or unknown key, 403 for a scope or a user the
  key does not cover.
* With no key configured every request is let through, and :meth:`Authenticator.check_bind` refuses
  to start a server on anything but a loopback address.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from fastapi import Depends, HTTPException, Request
from prometheus_client import CollectorRegistry, Counter, generate_latest
from pydantic import ValidationError

from infra.errors import AuthError
from schemas.config import AuthSettings, describe_errors
from schemas.keys import ApiKey, KeyFile, Scope, find_key

log = logging.getLogger("samtuner.auth")

UserCheck = Literal["none", "body", "path", "all"]
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_BEARER = {"WWW-Authenticate": "Bearer"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_keys(auth: AuthSettings) -> tuple[ApiKey, ...]:
    """The keys of the config plus those of ``auth.keys_file``; errors name the file and the bad entries."""
    keys = list(auth.keys)
    if auth.keys_file:
        path = Path(auth.keys_file).expanduser()
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise AuthError(f"auth.keys_file {path}: cannot read it: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise AuthError(f"auth.keys_file {path}: not valid YAML: {exc}") from exc
        try:
            keys.extend(KeyFile.model_validate(raw).keys)
        except ValidationError as exc:
            raise AuthError(f"auth.keys_file {path}: {describe_errors(exc, KeyFile)}") from exc
    ids = [k.id for k in keys]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise AuthError(f"API key ids must be unique across auth.keys and auth.keys_file; repeated: {', '.join(dupes)}")
    return tuple(keys)


class Authenticator:
    def __init__(self, keys: Sequence[ApiKey] = ()) -> None:
        self.keys = tuple(keys)
        self.registry = CollectorRegistry()
        self.failures = Counter(
            "samtuner_auth_failures", "HTTP requests refused, by reason.", ["reason"], registry=self.registry
        )
        for reason in ("missing_key", "invalid_key", "scope", "user"):
            self.failures.labels(reason)  # exported at 0, so a rate() has a start

    @classmethod
    def from_settings(cls, auth: AuthSettings) -> Authenticator:
        return cls(load_keys(auth))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check_bind(self, host: str, what: str) -> None:
        """Refuse a server open to anyone: a non-loopback address with no API keys configured."""
        if not self.enabled and not is_loopback(host):
            raise AuthError(
                f"{what} is {host}, but no API keys are configured (auth.keys / auth.keys_file), so anyone who "
                "reaches that address could act for any user; add keys (`samtuner keys create`) or bind 127.0.0.1"
            )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- per request ---------------------------------------------------------------------------

    def _refuse(self, status: int, reason: str, message: str) -> HTTPException:
        self.failures.labels(reason).inc()
        return HTTPException(status, message, headers=_BEARER if status == 401 else None)

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The caller's key (None when no keys are configured); raises 401 otherwise."""
        if not self.enabled:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self._refuse(401, "missing_key", "missing API key: send 'Authorization: Bearer <key>'")
        key = find_key(self.keys, token.strip())
        if key is None:
            raise self._refuse(401, "invalid_key", "invalid API key")
        return key

    def authorize(self, key: ApiKey | None, scope: Scope | None, check: UserCheck, user_id: str | None) -> None:
        if key is None:
            return
        if scope is not None and not key.allows(scope):
            raise self._refuse(403, "scope", f"this API key lacks the '{scope}' scope")
        if check == "all" and key.restricted:
            raise self._refuse(
                403,
                "user",
                "this API key acts for some users only; listing every user needs a key without a user restriction",
            )
        if check in ("body", "path") and not key.acts_for(user_id):
            raise self._refuse(403, "user", "this API key may not act for this user")

    def require(self, scope: Scope | None, user: UserCheck = "none") -> Any:
        """A FastAPI dependency (for ``dependencies=[...]``) that lets only fitting keys through."""

        async def dependency(request: Request) -> ApiKey | None:
            key = self.authenticate(request.headers.get("authorization"))
            user_id: str | None = None
            if key is not None and user == "path":
                user_id = request.path_params.get("user_id")
            elif key is not None and user == "body":
                user_id = await _body_user(request)
            self.authorize(key, scope, user, user_id)
            return key

        return Depends(_named(dependency, f"require_{scope or 'key'}_{user}"))


class KeyAuthorizer:
    """The console's ``Authorizer`` seam (``console/auth.py``) over API keys: its pages need ``read``, its
    actions ``admin``, both from a key without a user restriction (the console shows every user).

    Wiring (the console's ``build_console``): ``KeyAuthorizer(auth) if auth.enabled else
    TokenAuthorizer.from_settings(cfg.console)``, with ``auth = Authenticator.from_settings(cfg.auth)``.
    """

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    @property
    def configured(self) -> bool:
        return self.auth.enabled

    def require_reader(self, request: Request) -> None:
        self.auth.authorize(self.auth.authenticate(request.headers.get("authorization")), "read", "all", None)

    def require_admin(self, request: Request) -> None:
        self.auth.authorize(self.auth.authenticate(request.headers.get("authorization")), "admin", "all", None)


async def _body_user(request: Request) -> str | None:
    """The ``user`` field of a JSON body (FastAPI has parsed and cached the body already)."""
    try:
        body = await request.json()
    except ValueError:
        return None
    value = body.get("user") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def _named(fn: Callable[[Request], Awaitable[ApiKey | None]], name: str) -> Callable[[Request], Awaitable[Any]]:
    fn.__name__ = name  # FastAPI caches dependencies by callable; the name helps its error messages
    return fn
