"""Runs a training job in a subprocess and relays its progress lines; the seam tests can fake.

``should_stop`` is asked every ``tick_interval_s``: when it returns a reason (cancelled, the
partition moved to another worker, shutdown), the process gets SIGTERM, then SIGKILL after
``grace_s``, and the result is ``stopped`` with that reason. The process runs in its own session, so
a Ctrl-C meant for the worker does not reach it; it exits by itself if the worker dies.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from trainer.spec import JobResult, JobSpec

ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], str | None]


class JobRunner(Protocol):
    def run(self, spec: JobSpec, job_dir: Path, on_progress: ProgressFn, should_stop: StopFn) -> JobResult: ...


class SubprocessJobRunner:
    """``python -m trainer.job``: stdout carries JSON lines, stderr goes to ``job_dir/train.log``."""

    def __init__(self, python: str | None = None, tick_interval_s: float = 0.25, grace_s: float = 5.0) -> None:
        self.python = python or sys.executable
        self.tick_interval_s = tick_interval_s
        self.grace_s = grace_s

    def run(self, spec: JobSpec, job_dir: Path, on_progress: ProgressFn, should_stop: StopFn) -> JobResult:
        job_dir.mkdir(parents=True, exist_ok=True)
        spec_path, result_path, log_path = job_dir / "spec.json", job_dir / "result.json", job_dir / "train.log"
        spec_path.write_text(spec.model_dump_json())
        result_path.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        stop_reason: str | None = None
        with log_path.open("ab") as log:
            log.write(f"--- attempt {spec.attempt} ---\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [self.python, "-m", "trainer.job", str(spec_path), str(result_path)],
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=root,
                start_new_session=True,
            )
            lines: queue.Queue[bytes | None] = queue.Queue()
            reader = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
            reader.start()
            finished = False
            while not finished:
                if stop_reason is None and (stop_reason := should_stop()) is not None:
                    _terminate(proc, self.grace_s)
                deadline = time.monotonic() + self.tick_interval_s
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        line = lines.get(timeout=left)
                    except queue.Empty:
                        break
                    if line is None:
                        finished = True
                        break
                    if stop_reason is None:
                        _relay(line, on_progress)
            proc.wait()
        if stop_reason is not None:
            return JobResult(status="stopped", cause=stop_reason, error_type="Stopped")
        if result_path.exists():
            return JobResult.model_validate_json(result_path.read_text())
        killed = proc.returncode == -signal.SIGKILL
        return JobResult(
            status="failed",
            # The kernel's OOM killer sends SIGKILL: retried like an out-of-memory error.
            error_type="JobKilled" if killed else "JobCrashed",
            cause=f"the training process exited with {_describe_exit(proc.returncode)} without a result"
            f"{' (probably out of memory)' if killed else ''}; last log lines: {_tail(log_path)}",
        )


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _pump(proc: subprocess.Popen[bytes], lines: queue.Queue[bytes | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)


def _relay(line: bytes, on_progress: ProgressFn) -> None:
    try:
        payload = json.loads(line)
    except json.JSONDecodeError:
        return
    if isinstance(payload, dict):
        on_progress(payload)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
