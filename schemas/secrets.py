"""Secrets out of every output: redaction of config dumps, URLs and free text (pure functions).

What counts as a secret: a password in a URL's user info (``http://user:PASS@host``), the value of
any key that names one (``password``, ``secret``, ``token``, ``api_key``, ...: not ``password_env``
or ``password_file``, which name where a secret is, and not ``sha256``), and the values a process
resolved at run time (passwords read from an environment variable or a file), which are masked
wherever they occur in a text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^@/\s]+)(?=@)")
# Whole words of a key's name ('hub_token', 'password'; not 'max_new_tokens').
_SECRET_KEY = re.compile(
    r"(?:^|[_-])(password|passwd|pwd|secret|token|api[_-]?key|apikey|credentials?|"
    r"private[_-]?key)(?:$|[_-])",
    re.IGNORECASE,
)
_NOT_SECRET = re.compile(r"(_env|_file|_path|_location|sha256|_id)$", re.IGNORECASE)


def redact_url(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host`` (anywhere in ``text``)."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET.search(key)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with secrets masked: values of secret-named keys, URL passwords."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret_key(str(k)) and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_url(value)
    return value


class Masker:
    """Masks known secret values (and URL passwords) in any text: for log lines and error messages."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole. Very short values are not
        # masked: they would turn ordinary words into '***' (and are not worth the name anyway).
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return redact_url(text)

    def __bool__(self) -> bool:
        return True
