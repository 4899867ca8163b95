"""The Python API: ``generate_personalized_response`` against a node in this process or over HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from inference.errors import NodeUnavailable
from inference.generator import GENERATION_OPTIONS
from inference.response import PersonalizedResponse

if TYPE_CHECKING:
    from inference.node import InferenceNode


def _default_url() -> str:
    env = os.environ.get("SAMTUNER_NODE_URL")
    if env:
        return env
    from schemas.config import load_config

    cfg = load_config()
    return f"http://{cfg.inference.host}:{cfg.inference.port}"


class NodeClient:
    """A connection to a node's HTTP API (reuse it for many requests)."""

    def __init__(self, url: str | None = None, timeout_s: float = 120.0, api_key: str | None = None) -> None:
        """``api_key``: sent as ``Authorization: Bearer`` (default: ``SAMTUNER_API_KEY``, if set)."""
        self.url = (url or _default_url()).rstrip("/")
        key = api_key or os.environ.get("SAMTUNER_API_KEY")
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout_s, headers={"Authorization": f"Bearer {key}"} if key else None
        )

    def generate(
        self, prompt: str, user_id: str | None = None, context: Sequence[Mapping[str, str]] | None = None, **kw: Any
    ) -> PersonalizedResponse:
        unknown = set(kw) - set(GENERATION_OPTIONS)
        if unknown:
            raise TypeError(f"unknown generation options {sorted(unknown)}; valid: {', '.join(GENERATION_OPTIONS)}")
        body: dict[str, Any] = {
            "messages": [*(dict(m) for m in context or ()), {"role": "user", "content": prompt}],
            "user": user_id,
        }
        if kw.get("max_new_tokens") is not None:
            body["max_tokens"] = kw["max_new_tokens"]
        if kw.get("min_new_tokens") is not None:
            body["min_tokens"] = kw["min_new_tokens"]
        for name in ("temperature", "top_p"):
            if kw.get(name) is not None:
                body[name] = kw[name]
        try:
            r = self._http.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise NodeUnavailable(f"cannot reach the node at {self.url}: {exc}") from exc
        if r.status_code != 200:
            raise NodeUnavailable(f"the node at {self.url} answered {r.status_code}: {r.text[:500]}")
        data = r.json()
        meta = data["samtuner"]
        return PersonalizedResponse(
            text=data["choices"][0]["message"]["content"],
            user_id=meta["user"],
            source=meta["source"],
            adapter_version=meta["adapter_version"],
            fallback_reason=meta["fallback_reason"],
            latency_ms=float(meta["latency_ms"]),
            arm=meta["arm"],
            fallback_detail=meta.get("fallback_detail", ""),
            answer_id=uuid.UUID(meta["answer_id"]),
            completion_tokens=int(data["usage"]["completion_tokens"]),
            prompt_tokens=int(data["usage"]["prompt_tokens"]),
            ttft_ms=float(meta.get("ttft_ms") or 0.0),
            finish_reason=data["choices"][0].get("finish_reason") or "stop",
            stopped_by=meta.get("stopped_by"),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def generate_personalized_response(
    prompt: str,
    user_id: str | None = None,
    context: Sequence[Mapping[str, str]] | None = None,
    *,
    node: InferenceNode | None = None,
    url: str | None = None,
    api_key: str | None = None,
    **kw: Any,
) -> PersonalizedResponse:
    """Answer ``prompt`` with ``user_id``'s current adapter (or the base model, saying why).

    ``context``: earlier messages of the conversation (``{"role", "content"}``). ``node``: an
    :class:`InferenceNode` in this process; otherwise the node at ``url`` (default: ``SAMTUNER_NODE_URL``,
    else the config's ``inference.host:port``). ``kw``: ``max_new_tokens``, ``min_new_tokens``, ``temperature``,
    ``top_p``.
    """
    if node is not None:
        return node.generate_personalized_response(prompt, user_id, context, **kw)
    with NodeClient(url, api_key=api_key) as client:
        return client.generate(prompt, user_id, context, **kw)
