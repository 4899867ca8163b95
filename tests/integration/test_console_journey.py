"""The console, clicked as a person would, in Debian's Chromium against `samtuner run` (real broker,
embedded ClickHouse, the tiny model): filter and export pairs, bulk-deactivate by filter, start a
training job and watch its curve gain points live, see the adapter, compare answers, roll back, and
trace a correction and a rejected feedback.

With SAMTUNER_SCREENSHOTS=DIR it saves a screenshot of each tab there (docs/ in the README)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.kafka import KafkaEventPublisher
from samtuner.fixtures import parse_line, replay
from tests.browser import browser_page
from tests.conftest import REPLAYS
from tests.integration.harness import MakeConfig, RunningProcess, wait_caught_up, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]
TOKEN = "journey-admin-token"


def shot(page: Any, name: str) -> None:
    out = os.environ.get("SAMTUNER_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"console-{name}.png"))


def api(node: RunningProcess, path: str) -> Any:
    return httpx.get(f"{node.url}{path}", timeout=30).raise_for_status().json()


def job_of(node: RunningProcess, user: str, count: int) -> dict[str, Any] | None:
    """The user's ``count``-th job once it finished, else None."""
    jobs = [j for j in api(node, f"/api/v1/jobs?user={user}")["rows"]]
    done = [j for j in jobs if j["status"] in ("succeeded", "failed", "rejected", "cancelled")]
    return done[0] if len(jobs) >= count and len(done) >= count else None


def test_the_console_journey(make_config: MakeConfig, tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    cfg, cfg_path = make_config(
        trigger={"min_new_pairs": 1000},  # no automatic training: the journey starts it
        trainer={"progress_interval_s": 0.0, "fault_injection": {"step_delay_s": 0.15}},  # slow enough to watch
        console={"admin_token_file": str(token_file)},
    )
    node = RunningProcess(cfg, cfg_path)
    started = time.monotonic()
    try:
        node.wait_ready()
        publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
        lines = [json.loads(line) for line in (REPLAYS / "demo.jsonl").read_text().splitlines() if line.strip()]
        replay([parse_line(line, "demo.jsonl") for line in lines], publisher, cfg.kafka.topic_prefix)
        publisher.flush()
        wait_caught_up(cfg, proc=node)
        bob_pairs = api(node, "/api/v1/pairs?user=bob")["total"]
        assert bob_pairs > 0

        with browser_page() as page:
            page.goto(f"{node.url}/console/")
            page.wait_for_selector("body[data-ready=true]")
            page.wait_for_selector("#pairs tbody tr")

            # -- filter the pairs table and export the filtered set --------------------------------
            page.fill("#pair-filter input[name=user]", "bob")
            page.click("#pair-filter button[type=submit]")
            page.wait_for_function(f"document.querySelector('#pairs-count').dataset.total == '{bob_pairs}'")
            users_shown = page.eval_on_selector_all(
                "#pairs tbody tr td:first-child", "els => els.map(e => e.textContent)"
            )
            assert users_shown and set(users_shown) == {"bob"}
            assert page.locator("#pairs tbody ins, #pairs tbody del").count() > 0  # the word diff is drawn
            with page.expect_download() as download:
                page.click("#export-jsonl")
            exported = Path(download.value.path()).read_text().splitlines()
            rows = [json.loads(line) for line in exported]
            assert len(rows) == bob_pairs and {r["user_id"] for r in rows} == {"bob"}
            assert all(r["prompt"] and r["chosen"] and r["rejected"] for r in rows)  # TRL's columns

            # -- the admin token, then bulk-deactivate every row matching the filter -----------------
            page.click("#token-button")
            page.fill("#token-input", TOKEN)
            page.click("#token-form button[type=submit]")
            page.wait_for_selector("#access-state.admin")
            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#bulk-deactivate")
            page.wait_for_function(
                f"document.querySelectorAll('#pairs tbody .badge.inactive').length == {min(bob_pairs, 50)}",
                timeout=60_000,
            )
            assert api(node, "/api/v1/pairs?user=bob&active=true")["total"] == 0  # the projection changed
            assert api(node, "/api/v1/pairs?user=bob&active=false")["total"] == bob_pairs
            shot(page, "pairs")

            # -- the rejected feedback and the dead letters, by reason ------------------------------
            page.click("button[data-sub=pairs-rejected]")
            page.wait_for_selector("#rejected tbody tr")
            reasons = page.eval_on_selector_all("#rejected-reason option", "os => os.map(o => o.value).filter(Boolean)")
            assert reasons
            page.select_option("#rejected-reason", reasons[0])
            page.wait_for_function("document.querySelector('#rejected-count').textContent.includes('rejected')")
            page.click("button[data-sub=pairs-dead]")
            page.wait_for_selector("#dead tbody tr")

            # -- start a training job (a bad override first) and watch the curve live ----------------
            page.click("#tabs a[data-tab=training]")
            page.wait_for_selector("#users tbody tr")
            page.fill("#train-form input[name=user]", "alice")
            page.fill("#train-form input[name=per_device_train_batch_size]", "2.5")
            page.click("#train-start")
            page.wait_for_function(
                "document.querySelector('[data-for=per_device_train_batch_size]').textContent.length > 0"
            )
            assert "per_device_train_batch_size" in page.text_content("[data-for=per_device_train_batch_size]")
            page.fill("#train-form input[name=per_device_train_batch_size]", "")
            page.fill("#train-form input[name=num_train_epochs]", "3")
            page.click("#train-start")
            page.wait_for_selector("#job-view:not([hidden])", timeout=60_000)
            counts: list[int] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                n = int(page.get_attribute("#job-points", "data-count") or 0)
                if not counts or n != counts[-1]:
                    counts.append(n)
                if page.text_content("#job-status") == "succeeded":
                    break
                page.wait_for_timeout(200)
            assert len([c for c in counts if c > 0]) >= 3, f"the curve did not grow live: {counts}"
            assert counts == sorted(counts)
            assert page.locator("#chart-loss .point").count() > 0
            page.wait_for_function("document.querySelector('#job-status').textContent == 'succeeded'", timeout=60_000)
            page.wait_for_selector("#gate .badge.succeeded")
            shot(page, "training")
            first = wait_for(lambda: job_of(node, "alice", 1), 60, "alice's first job in the store")
            assert first["status"] == "succeeded" and first["dpo_overrides"] == {"num_train_epochs": 3}
            assert len(api(node, f"/api/v1/jobs/{first['request_id']}/progress")["points"]) >= 3  # past curves

            # a second version, so that there is something to roll back to
            page.fill("#train-form input[name=num_train_epochs]", "")
            page.click("#train-start")
            wait_for(lambda: (j := job_of(node, "alice", 2)) and j["adapter_version"] == 2, 180, "alice's v2")
            wait_for(
                lambda: node.ask("What is the capital of Peru?", "alice")["samtuner"]["adapter_version"] == 2,
                60,
                "the node to serve v2",
            )

            # -- the models tab: versions, compare, roll back ---------------------------------------
            page.click("#tabs a[data-tab=models]")
            page.wait_for_selector("#model-users tr[data-user=alice]")
            page.click("#model-users tr[data-user=alice]")
            page.wait_for_function("document.querySelectorAll('#versions tbody tr').length == 2")
            assert page.locator("#versions tbody a[href^='#trace/']").count() > 0  # lineage: pair ids link to pairs
            page.fill("#compare-prompt", "What is the capital of Peru?")
            page.click("#compare-form button")
            page.wait_for_selector("#compare div[data-arm=current] .answer")
            for arm in ("base", "previous", "current"):
                assert page.text_content(f"#compare div[data-arm={arm}] h4")
                assert page.locator(f"#compare div[data-arm={arm}] .answer").count() == 1, arm
            assert "v1" in page.text_content("#compare div[data-arm=previous] h4")
            page.wait_for_selector("#nodes table")
            shot(page, "models")
            page.click("#model-rollback")
            page.wait_for_function("document.querySelector('#model-state').dataset.pinned == '1'", timeout=30_000)
            wait_for(
                lambda: node.ask("What is the capital of Peru?", "alice")["samtuner"]["adapter_version"] == 1,
                30,
                "the rollback to be served",
            )

            # -- the trace of one correction, then of a rejected one -------------------------------
            page.click("#tabs a[data-tab=pairs]")
            page.click("button[data-sub=pairs-table]")
            page.click("#pair-filter button[type=reset]")
            page.fill("#pair-filter input[name=user]", "alice")
            page.click("#pair-filter button[type=submit]")
            page.wait_for_function("document.querySelector('#pairs tbody td').textContent == 'alice'")
            page.click("#pairs tbody tr:first-child a[href^='#trace/']")
            page.wait_for_selector("#trace li[data-step=pair]")
            steps = page.eval_on_selector_all("#trace li", "ls => ls.map(l => l.dataset.step)")
            assert "adapter" in steps, steps
            assert steps[:3] == ["feedback", "pair", "threshold"] and "job" in steps and "answers" in steps
            assert page.locator("#trace li[data-step=answers] a[href^='#trace/']").count() >= 1  # answers served
            shot(page, "trace")
            page.click("#tabs a[data-tab=pairs]")
            page.click("button[data-sub=pairs-rejected]")
            page.select_option("#rejected-reason", "")
            page.wait_for_selector("#rejected tbody tr")
            page.click("#rejected tbody tr:first-child a[href^='#trace/']")
            page.wait_for_selector("#trace li[data-step=rejected] .badge")
            assert page.get_attribute("#trace", "data-kind") == "rejected"
        print(f"console journey: {time.monotonic() - started:.1f}s")
    finally:
        node.stop()
