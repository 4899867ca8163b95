"""Errors of the console. The routes turn each into an HTTP answer that names the cause.

ConsoleError
├── BadRequest          the request cannot be honoured as asked (400; ``field`` names the input)
│   └── TooManyPairs    a bulk action over more pairs than console.bulk_max_pairs
├── NotFound            nothing with that id (404)
├── Unauthorized        no or a wrong admin token (401)
└── Unavailable         a part this process does not have: no node, no Kafka publisher (503)
"""

from __future__ import annotations


class ConsoleError(Exception):
    status = 500

    def __init__(self, message: str, field: str | None = None, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.fields = fields or {}  # input name -> its problem, shown next to that input


class BadRequest(ConsoleError):
    status = 400


class TooManyPairs(BadRequest):
    pass


class NotFound(ConsoleError):
    status = 404


class Unauthorized(ConsoleError):
    status = 401


class Unavailable(ConsoleError):
    status = 503
