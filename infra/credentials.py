"""Secrets at run time: a password read from an environment variable or a file, never from the config."""

from __future__ import annotations

import os
from pathlib import Path

from infra.errors import CredentialsError


def read_secret(env: str | None, file: str | None, what: str) -> str | None:
    """The secret named by ``env`` (an environment variable) or ``file``; None when neither is set.

    Errors name where the secret was looked for, never the secret itself."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise CredentialsError(f"{what}: the environment variable {env} is not set (or empty)")
        return value
    if file is not None:
        path = Path(file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise CredentialsError(f"{what}: cannot read the password file {path}: {exc.strerror}") from exc
        if not value:
            raise CredentialsError(f"{what}: the password file {path} is empty")
        return value
    return None
