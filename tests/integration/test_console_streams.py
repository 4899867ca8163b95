"""`samtuner streams` owns the store, so it serves the console on its own port (no node there)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from infra.broker import free_port
from samtuner.publisher import FeedbackPublisher
from tests.integration.harness import MakeConfig, RunningProcess, wait_for

pytestmark = pytest.mark.integration


def test_the_stream_worker_serves_the_console_and_its_commands(make_config: MakeConfig, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("streams-token")
    port = free_port()
    cfg, cfg_path = make_config(console={"port": port, "admin_token_file": str(token)}, trigger={"min_new_pairs": 100})
    proc = RunningProcess(cfg, cfg_path, command="streams", log_name="streams.log")
    url = f"http://127.0.0.1:{port}"
    try:

        def whoami() -> dict | None:
            if not proc.alive():
                raise AssertionError(proc.log()[-3000:])
            try:
                return httpx.get(f"{url}/api/v1/whoami", timeout=2).json()
            except httpx.HTTPError:
                return None

        me = wait_for(whoami, 120, "the console of samtuner streams")
        assert me["store"] and me["live"] and not me["node"]
        assert httpx.get(f"{url}/console/", timeout=5).status_code == 200
        assert httpx.get(f"{url}/api/v1/nodes", timeout=5).status_code == 503  # no node, no node_urls

        with FeedbackPublisher(cfg.kafka.bootstrap_servers, topic_prefix=cfg.kafka.topic_prefix) as sam:
            for i in range(3):
                sam.correction(
                    user_id="dora",
                    prompt=f"What is {i} plus 2?",
                    original_response=f"{i + 2}.",
                    corrected_response=f"{i} plus 2 is {i + 2}. Hope this helps!",
                )
        wait_for(
            lambda: httpx.get(f"{url}/api/v1/pairs?user=dora", timeout=5).json()["total"] == 3,
            120,
            "dora's pairs in the console",
        )
        r = httpx.post(
            f"{url}/api/v1/pairs/bulk",
            json={"filter": {"user": "dora"}, "action": "reweight", "weight": 0.25},
            headers={"Authorization": "Bearer streams-token"},
            timeout=30,
        )
        assert r.status_code == 202, r.text
        wait_for(
            lambda: (
                {p["training_weight"] for p in httpx.get(f"{url}/api/v1/pairs?user=dora", timeout=5).json()["rows"]}
                == {0.25}
            ),
            60,
            "the reweight to reach the projection",
        )
    finally:
        proc.stop()
