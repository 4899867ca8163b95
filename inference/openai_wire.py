"""OpenAI's chat-completion wire format: answers, streamed chunks and errors, as plain dicts. Pure.

Errors look like OpenAI's (``{"error": {"message", "type", "param", "code"}}``) so that its clients raise
their usual exceptions (``BadRequestError``, ``RateLimitError``...); ours add ``limit``, the config key
of the limit a refusal names.
"""

from __future__ import annotations

import json
import time
from typing import Any

from inference.response import PersonalizedResponse

_ERROR_TYPES = {
    400: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
    500: "server_error",
}


def error_body(
    message: str, status: int, code: str, param: str | None = None, limit: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": _ERROR_TYPES.get(status, "invalid_request_error"),
        "param": param,
        "code": code,
    }
    if limit is not None:
        error["limit"] = limit
    return {"error": error}


def usage(answer: PersonalizedResponse) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def completion(answer: PersonalizedResponse, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{answer.answer_id.hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": answer.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(answer),
        "samtuner": answer.describe(),
    }


class ChunkStream:
    """The ``chat.completion.chunk`` events of one streamed answer, as server-sent-event lines."""

    def __init__(self, answer_id_hex: str, model: str) -> None:
        self.id = f"chatcmpl-{answer_id_hex}"
        self.model = model
        self.created = int(time.time())

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def first(self, head: dict[str, Any]) -> str:
        """The role, and who answers (``samtuner``: adapter version, arm, fallback reason) before any token."""
        return self._chunk(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}],
            samtuner=head,
        )

    def piece(self, text: str) -> str:
        return self._chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None, "logprobs": None}])

    def last(self, answer: PersonalizedResponse) -> str:
        """The finish reason, the usage and the answer's full ``samtuner`` object (latency, stopped_by...)."""
        return self._chunk(
            [{"index": 0, "delta": {}, "finish_reason": answer.finish_reason, "logprobs": None}],
            usage=usage(answer),
            samtuner=answer.describe(),
        )

    @staticmethod
    def error(body: dict[str, Any]) -> str:
        return f"data: {json.dumps(body)}\n\n"

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"
