"""API keys: the contract of the key file and the config's ``auth.keys`` (hashed at rest).

A key is a random bearer token (``Authorization: Bearer st-...``, what every OpenAI client sends);
only its sha256 is stored. Each key has scopes and may act for some users only:

* ``infer``: chat completions;
* ``read``: what a node or the store knows (user state, adapters, stats, metrics, analytics);
* ``admin``: commands (activation, training, erasure); it implies ``read`` and ``infer``.

A key with ``users`` or ``user_prefix`` acts only for those users: a request for anyone else (or
for no user at all) is refused with 403, and listings of every user need an unrestricted key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scope = Literal["infer", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("infer", "read", "admin")
TOKEN_PREFIX = "st-"


class ApiKey(BaseModel):
    """One key as stored: its id, the sha256 of its token, what it may do and for whom."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128, description="A name for the key (shown in logs, never the token).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 (hex) of the token.")
    scopes: tuple[Scope, ...] = Field(min_length=1, description="infer, read and/or admin (admin implies the rest).")
    users: tuple[str, ...] = Field((), description="Act only for these user ids (empty = no list).")
    user_prefix: str | None = Field(None, min_length=1, description="Act only for user ids starting with this.")

    @property
    def restricted(self) -> bool:
        return bool(self.users) or self.user_prefix is not None

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def acts_for(self, user_id: str | None) -> bool:
        """May this key act for ``user_id``? A restricted key never acts for no user."""
        if not self.restricted:
            return True
        if user_id is None:
            return False
        return user_id in self.users or (self.user_prefix is not None and user_id.startswith(self.user_prefix))


class KeyFile(BaseModel):
    """The key file (``auth.keys_file``): ``{keys: [{id, sha256, scopes, users, user_prefix}, ...]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: tuple[ApiKey, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> KeyFile:
        ids = [k.id for k in self.keys]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"key ids must be unique; repeated: {', '.join(dupes)}")
        return self


def hash_token(token: str) -> str:
    """What is stored of a token. Tokens are 256 random bits, so a plain sha256 cannot be reversed."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def find_key(keys: tuple[ApiKey, ...], token: str) -> ApiKey | None:
    """The key whose hash matches ``token`` (compared in constant time), or None."""
    digest = hash_token(token)
    found = None
    for key in keys:
        if hmac.compare_digest(key.sha256, digest):
            found = key
    return found
