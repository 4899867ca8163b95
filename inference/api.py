"""HTTP API of a node (FastAPI), compatible with OpenAI's chat completions; answers say who answered.

* ``POST /v1/chat/completions``: the request's ``user`` field selects the user's adapter; the last
  message must be the user's, earlier ones are the conversation's context. The response is an OpenAI
  ``chat.completion`` plus a ``samtuner`` object: answer id, arm, adapter version used, or the reason
  the base model answered. Streaming and ``n > 1`` are refused with a clear error.
* ``POST /v1/users/{id}/activate`` (``{"version": null, "new_share": 0.5}``) and ``.../deactivate``
  publish ActivateAdapter / DeactivateAdapter commands; the registrar turns them into registry events
  that every node honours (202 Accepted, with the command id).
* ``GET /v1/users/{id}``: what this node knows of a user. ``GET /v1/adapters``: the adapters loaded
  here (for routers). ``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` (Prometheus).

With API keys configured (``auth``: see ``infra/auth.py``) every route but ``/healthz`` needs a key:
chat ``infer`` (and a key restricted to some users answers only them), reads ``read``, commands
``admin``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from inference.errors import GenerationError
from inference.metrics import CONTENT_TYPE
from inference.node import InferenceNode
from infra.auth import Authenticator
from schemas.commands import ActivateAdapter, Command, DeactivateAdapter

MODEL_ID = "sam-tuner"


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    # Other OpenAI fields (presence_penalty, seed, ...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")
    model: str = MODEL_ID
    messages: list[ChatMessage] = Field(min_length=1)
    user: str | None = Field(None, min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = None
    stream: bool | None = None


class ActivateRequest(BaseModel):
    version: int | None = Field(None, ge=1, description="The latest or the previous version; None = the latest.")
    new_share: float | None = Field(None, ge=0.0, le=1.0, description="A/B share of requests to the latest version.")


def create_api(
    node: InferenceNode,
    send_command: Callable[[Command], None] | None = None,
    stats: Callable[[], dict[str, Any]] | None = None,
    ready: Callable[[], bool] | None = None,
    auth: Authenticator | None = None,
) -> FastAPI:
    # No /docs from a CDN: the console serves its own API page (console/static/docs.html).
    api = FastAPI(title="sam-tuner inference node", version="1", docs_url=None, redoc_url=None)
    auth = auth or Authenticator()  # no keys: open, and the server binds loopback only (service.py)

    @api.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "node_id": node.node_id, "registry_ready": bool(ready()) if ready else True,
                "registry_users": len(node.registry), "resident_adapters": node.cache.stats().entries}

    @api.get("/metrics", dependencies=[auth.require("read")])
    def metrics() -> Response:
        return Response(node.metrics.exposition() + auth.exposition(), media_type=CONTENT_TYPE)

    @api.get("/v1/models", dependencies=[auth.require(None)])
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "sam-tuner"}]}

    @api.get("/v1/adapters", dependencies=[auth.require("read", user="all")])
    def adapters() -> dict[str, Any]:
        return {"node_id": node.node_id, "data": node.resident()}

    @api.get("/v1/stats", dependencies=[auth.require("read")])
    def get_stats() -> dict[str, Any]:
        if stats is None:
            raise HTTPException(404, "this process does not own the projections store")
        return stats()

    @api.get("/v1/users/{user_id:path}/state", dependencies=[auth.require("read", user="path")])
    def user_state(user_id: str) -> dict[str, Any]:
        return node.user_state(user_id)

    def command(cmd: Command) -> dict[str, Any]:
        if send_command is None:
            raise HTTPException(503, "this node cannot publish commands (no Kafka publisher)")
        send_command(cmd)
        return {"status": "accepted", "command_id": str(cmd.command_id), "command": type(cmd).__name__,
                "user": cmd.user_id}

    @api.post("/v1/users/{user_id:path}/activate", status_code=202,
              dependencies=[auth.require("admin", user="path")])
    def activate(user_id: str, body: ActivateRequest | None = None) -> dict[str, Any]:
        body = body or ActivateRequest()
        return command(ActivateAdapter(user_id=user_id, version=body.version, new_share=body.new_share,
                                       issued_by=f"http:{node.node_id}"))

    @api.post("/v1/users/{user_id:path}/deactivate", status_code=202,
              dependencies=[auth.require("admin", user="path")])
    def deactivate(user_id: str) -> dict[str, Any]:
        return command(DeactivateAdapter(user_id=user_id, issued_by=f"http:{node.node_id}"))

    @api.post("/v1/chat/completions", dependencies=[auth.require("infer", user="body")])
    async def chat(req: ChatCompletionRequest) -> dict[str, Any]:
        if req.stream:
            raise HTTPException(400, "streaming is not supported by this node; send stream=false")
        if req.n not in (None, 1):
            raise HTTPException(400, "n must be 1: a node returns one answer per request")
        last = req.messages[-1]
        if last.role != "user":
            raise HTTPException(400, "the last message must be the user's")
        context = [{"role": m.role, "content": m.text()} for m in req.messages[:-1]]
        limit = req.max_completion_tokens or req.max_tokens
        try:
            answer = await run_in_threadpool(node.generate_personalized_response, last.text(), req.user, context,
                                             max_new_tokens=limit, temperature=req.temperature, top_p=req.top_p)
        except GenerationError as exc:
            raise HTTPException(500, str(exc)) from exc
        finish = "length" if answer.completion_tokens >= (limit or node.generator.default_max_new_tokens) else "stop"
        return {
            "id": f"chatcmpl-{answer.answer_id.hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                      "total_tokens": answer.prompt_tokens + answer.completion_tokens},
            "samtuner": answer.describe(),
        }

    return api
