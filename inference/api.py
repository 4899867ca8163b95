"""HTTP API of a node (FastAPI): an OpenAI-compatible chat endpoint whose answers say who answered.

``POST /v1/chat/completions``: the request's ``user`` field selects the user's adapter; the
response's ``samtuner`` object names the adapter version used, or why the base model answered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from inference.engine import InferenceEngine
from inference.errors import GenerationError


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = ""


class ChatCompletionRequest(BaseModel):
    model: str = "sam-tuner"
    messages: list[ChatMessage] = Field(min_length=1)
    user: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = None  # accepted for compatibility; answers are greedy


def create_api(engine: InferenceEngine, stats: Callable[[], dict[str, Any]] | None = None,
               ready: Callable[[], bool] | None = None) -> FastAPI:
    api = FastAPI(title="sam-tuner inference node", version="1")

    @api.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "registry_ready": bool(ready()) if ready else True,
                "resident_adapters": len(engine.resident())}

    @api.get("/v1/adapters")
    def adapters() -> dict[str, Any]:
        return {"data": [{"user": u, "version": v} for u, v in sorted(engine.resident().items())]}

    @api.get("/v1/stats")
    def get_stats() -> dict[str, Any]:
        if stats is None:
            raise HTTPException(404, "this process does not own the projections store")
        return stats()

    @api.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest) -> dict[str, Any]:
        prompt = next((m.content or "" for m in reversed(req.messages) if m.role == "user"), None)
        if prompt is None:
            raise HTTPException(400, "messages must contain a user message")
        limit = req.max_completion_tokens or req.max_tokens
        try:
            answer = await run_in_threadpool(engine.generate, prompt, req.user, limit)
        except GenerationError as exc:
            raise HTTPException(500, str(exc)) from exc
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "samtuner": {
                "user": answer.user_id,
                "source": answer.source,
                "adapter_version": answer.adapter_version,
                "fallback_reason": answer.fallback_reason,
                "latency_ms": answer.latency_ms,
            },
        }

    return api
