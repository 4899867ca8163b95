"""The inference side as the console sees it: which node holds which adapter, a user's registry
state, and compare answers. One seam, two implementations: the node in this process, or nodes
reached over HTTP (``console.node_urls``) when this process runs none (``samtuner streams``)."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from console.errors import BadRequest, Unavailable


class NodeView(Protocol):
    def holdings(self) -> list[dict[str, Any]]:
        """Per node: its id, where it is, and the adapters it holds (or the error reaching it)."""
        ...

    def user_state(self, user: str) -> dict[str, Any] | None: ...

    def answer(self, prompt: str, user: str, version: int | None) -> dict[str, Any]: ...


def _answer_dict(answer: Any) -> dict[str, Any]:
    return {
        "text": answer.text,
        "source": answer.source,
        "adapter_version": answer.adapter_version,
        "latency_ms": answer.latency_ms,
        "completion_tokens": answer.completion_tokens,
    }


class LocalNode:
    """The node running in this process (``samtuner run``), plus any other configured nodes."""

    def __init__(self, node: Any, others: tuple[str, ...] = ()) -> None:
        self.node = node
        self.others = RemoteNodes(others) if others else None

    def holdings(self) -> list[dict[str, Any]]:
        here = [{"node_id": self.node.node_id, "where": "this process", "adapters": self.node.resident()}]
        return here + (self.others.holdings() if self.others else [])

    def user_state(self, user: str) -> dict[str, Any] | None:
        state: dict[str, Any] = self.node.user_state(user)
        return state

    def answer(self, prompt: str, user: str, version: int | None) -> dict[str, Any]:
        from inference.errors import AdapterRejected, GenerationError

        try:
            return _answer_dict(self.node.answer_with_version(prompt, user, version))
        except AdapterRejected as exc:
            raise BadRequest(f"version {version} cannot answer: {exc}", field="version") from exc
        except GenerationError as exc:
            raise Unavailable(f"generation failed: {exc}") from exc


class RemoteNodes:
    """Nodes over HTTP: ``GET /v1/adapters``, ``GET /v1/users/{id}/state``, ``POST /api/v1/compare/answer``."""

    def __init__(self, urls: tuple[str, ...], timeout_s: float = 30.0) -> None:
        self.urls = tuple(u.rstrip("/") for u in urls)
        self.timeout_s = timeout_s

    def holdings(self) -> list[dict[str, Any]]:
        out = []
        for url in self.urls:
            try:
                body = httpx.get(f"{url}/v1/adapters", timeout=5).raise_for_status().json()
                out.append({"node_id": body.get("node_id", url), "where": url, "adapters": body.get("data", [])})
            except (httpx.HTTPError, ValueError) as exc:
                out.append({"node_id": url, "where": url, "adapters": [], "error": str(exc)})
        return out

    def _first(self) -> str:
        if not self.urls:
            raise Unavailable("no inference node runs in this process and console.node_urls names none")
        return self.urls[0]

    def user_state(self, user: str) -> dict[str, Any] | None:
        if not self.urls:
            return None
        try:
            state: dict[str, Any] = (
                httpx.get(f"{self._first()}/v1/users/{user}/state", timeout=5).raise_for_status().json()
            )
            return state
        except (httpx.HTTPError, ValueError):
            return None

    def answer(self, prompt: str, user: str, version: int | None) -> dict[str, Any]:
        url = self._first()
        try:
            r = httpx.post(
                f"{url}/api/v1/compare/answer",
                timeout=self.timeout_s,
                json={"prompt": prompt, "user": user, "version": version},
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"node {url} cannot be reached: {exc}") from exc
        if r.status_code == 400:
            raise BadRequest(r.json().get("detail", r.text), field="version")
        if r.status_code != 200:
            raise Unavailable(f"node {url} answered {r.status_code}: {r.text[:300]}")
        body: dict[str, Any] = r.json()
        return body
