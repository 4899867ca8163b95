"""HTTP API of a node (FastAPI), compatible with OpenAI's chat completions; answers say who answered.

* ``POST /v1/chat/completions``: the request's ``user`` field selects the user's adapter; the last
  message must be the user's, earlier ones are the conversation's context. The response is an OpenAI
  ``chat.completion`` plus a ``samtuner`` object: answer id, arm, adapter version used, or the reason
  the base model answered. ``stream: true`` answers with server-sent ``chat.completion.chunk`` events:
  the first carries ``samtuner`` (who answers), the last the finish reason, usage and the full
  ``samtuner`` object. ``n > 1`` is refused.
* Limits (``inference.limits``): ``max_tokens``, prompt tokens, body bytes (413), time per request, queue
  depth (429 with ``Retry-After``). Every refusal is an OpenAI-style error whose ``limit`` names the key.
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

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.errors import GenerationError, LimitExceeded, NodeClosed, QueueFull
from inference.metrics import CONTENT_TYPE
from inference.node import InferenceNode
from inference.openai_wire import ChunkStream, completion, error_body
from inference.pending import PendingAnswer
from infra.auth import Authenticator
from schemas.commands import ActivateAdapter, Command, DeactivateAdapter

MODEL_ID = "sam-tuner"
_CHAT_PATH = "/v1/chat/completions"


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
    max_tokens: int | None = Field(None, ge=1)  # capped by inference.limits.max_tokens, with an error naming it
    max_completion_tokens: int | None = Field(None, ge=1)
    min_tokens: int | None = Field(None, ge=0, description="vLLM's extension: no stop token before this many.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None


class ActivateRequest(BaseModel):
    version: int | None = Field(None, ge=1, description="The latest or the previous version; None = the latest.")
    new_share: float | None = Field(None, ge=0.0, le=1.0, description="A/B share of requests to the latest version.")


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with a 413 before the app reads them (chunked bodies too)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away while sending
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, size)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later messages: the disconnect a streaming response listens for

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: int) -> None:
        body = json.dumps(
            error_body(
                f"the request body is {'at least ' if size > self.max_bytes else ''}{size} bytes, more than this node "
                f"accepts (inference.limits.max_body_bytes = {self.max_bytes})",
                413,
                "request_too_large",
                limit="inference.limits.max_body_bytes",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _refusal(exc: LimitExceeded) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
    return JSONResponse(
        error_body(str(exc), exc.status, exc.code, exc.param, exc.limit), status_code=exc.status, headers=headers
    )


def _invalid(message: str, param: str | None = None, code: str = "invalid_request") -> JSONResponse:
    return _error(400, message, code, param)


def _error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, code, param), status_code=status)


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
    api.add_middleware(BodyLimit, max_bytes=node.cfg.inference.limits.max_body_bytes)
    _add_error_handlers(api)
    _add_read_routes(api, node, stats, ready, auth)
    _add_command_routes(api, node, send_command, auth)
    _add_chat_route(api, node, auth)
    return api


def _add_error_handlers(api: FastAPI) -> None:
    """Limits and invalid chat requests answer as OpenAI-style errors."""

    @api.exception_handler(LimitExceeded)
    async def limit_exceeded(request: Request, exc: LimitExceeded) -> JSONResponse:
        return _refusal(exc)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path != _CHAT_PATH:
            return await request_validation_exception_handler(request, exc)
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(
            error_body(f"{param or 'request'}: {first.get('msg', 'invalid request')}", 400, "invalid_request", param),
            status_code=400,
        )


def _add_read_routes(
    api: FastAPI,
    node: InferenceNode,
    stats: Callable[[], dict[str, Any]] | None,
    ready: Callable[[], bool] | None,
    auth: Authenticator,
) -> None:
    """Health, metrics, models, the adapters loaded here, the store's stats and a user's state."""

    @api.get("/healthz")
    def healthz() -> dict[str, Any]:
        batch = node.scheduler.stats()
        return {
            "status": "ok",
            "node_id": node.node_id,
            "registry_ready": bool(ready()) if ready else True,
            "registry_users": len(node.registry),
            "resident_adapters": node.cache.stats().entries,
            "requests_running": batch.running,
            "requests_queued": batch.queued,
            "max_batch_size": batch.max_rows,
            "max_queue": batch.max_queue,
        }

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


def _add_command_routes(
    api: FastAPI, node: InferenceNode, send_command: Callable[[Command], None] | None, auth: Authenticator
) -> None:
    """Activate and deactivate a user's adapter: commands for the registrar (202 Accepted)."""

    @api.post("/v1/users/{user_id:path}/activate", status_code=202, dependencies=[auth.require("admin", user="path")])
    def activate(user_id: str, body: ActivateRequest | None = None) -> dict[str, Any]:
        body = body or ActivateRequest()
        return _publish(
            send_command,
            ActivateAdapter(
                user_id=user_id, version=body.version, new_share=body.new_share, issued_by=f"http:{node.node_id}"
            ),
        )

    @api.post("/v1/users/{user_id:path}/deactivate", status_code=202, dependencies=[auth.require("admin", user="path")])
    def deactivate(user_id: str) -> dict[str, Any]:
        return _publish(send_command, DeactivateAdapter(user_id=user_id, issued_by=f"http:{node.node_id}"))


def _publish(send_command: Callable[[Command], None] | None, cmd: Command) -> dict[str, Any]:
    """Hands a command to the publisher; the answer says what was accepted."""
    if send_command is None:
        raise HTTPException(503, "this node cannot publish commands (no Kafka publisher)")
    send_command(cmd)
    return {
        "status": "accepted",
        "command_id": str(cmd.command_id),
        "command": type(cmd).__name__,
        "user": cmd.user_id,
    }


def _add_chat_route(api: FastAPI, node: InferenceNode, auth: Authenticator) -> None:
    """``POST /v1/chat/completions``: one answer, whole or streamed."""

    @api.post(_CHAT_PATH, response_model=None, dependencies=[auth.require("infer", user="body")])
    async def chat(req: ChatCompletionRequest) -> dict[str, Any] | Response:
        refused = _check_chat_request(req, node.cfg.model.max_new_tokens)
        if refused is not None:
            return refused
        last = req.messages[-1]
        context = [{"role": m.role, "content": m.text()} for m in req.messages[:-1]]
        limit = req.max_completion_tokens or req.max_tokens
        try:
            pending: PendingAnswer = await run_in_threadpool(
                node.submit,
                last.text(),
                req.user,
                context,
                bool(req.stream),
                max_new_tokens=limit,
                min_new_tokens=req.min_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
            )
        except NodeClosed as exc:
            return _error(503, str(exc), "node_closed")
        except GenerationError as exc:
            return _error(500, str(exc), "generation_error")
        if req.stream:
            return StreamingResponse(
                _sse(pending, req.model),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _whole_answer(pending, req.model)


def _check_chat_request(req: ChatCompletionRequest, default_max_tokens: int) -> JSONResponse | None:
    """The refusal of a chat request this node does not answer, or None."""
    if req.n not in (None, 1):
        return _invalid("n must be 1: a node returns one answer per request", "n")
    if req.messages[-1].role != "user":
        return _invalid("the last message must be the user's", "messages")
    limit = req.max_completion_tokens or req.max_tokens
    if req.min_tokens and req.min_tokens > (limit or default_max_tokens):
        return _invalid(
            f"min_tokens ({req.min_tokens}) is more than max_tokens ({limit or default_max_tokens})",
            "min_tokens",
        )
    return None


async def _whole_answer(pending: PendingAnswer, model: str) -> dict[str, Any] | Response:
    """The answer as one ``chat.completion``."""
    try:
        answer = await pending.aresult()  # a LimitExceeded (the time bound) goes to its handler
    except NodeClosed as exc:
        return _error(503, str(exc), "node_closed")
    except GenerationError as exc:
        return _error(500, str(exc), "generation_error")
    finally:
        if not pending.done:
            pending.cancel()  # this handler was cancelled: the row leaves the batch
    return completion(answer, model)


async def _sse(pending: PendingAnswer, model: str) -> AsyncIterator[str]:
    """The answer as server-sent events; a client that goes away cancels its row."""
    chunks = ChunkStream(pending.answer_id.hex, model)
    try:
        yield chunks.first(pending.head)
        async for piece in pending.apieces():
            yield chunks.piece(piece)
        try:
            answer = await pending.aresult()
        except LimitExceeded as exc:
            yield chunks.error(error_body(str(exc), exc.status, exc.code, exc.param, exc.limit))
        except Exception as exc:  # the error goes to the client as OpenAI's streams send one
            yield chunks.error(error_body(f"{type(exc).__name__}: {exc}", 500, "generation_error"))
        else:
            yield chunks.last(answer)
        yield chunks.done()
    finally:
        if not pending.done:
            pending.cancel()
