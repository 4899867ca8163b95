"""Runs a training job in a subprocess and relays its progress lines; the seam tests can fake."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from trainer.spec import JobResult, JobSpec

ProgressFn = Callable[[dict[str, Any]], None]
TickFn = Callable[[], None]


class JobRunner(Protocol):
    def run(self, spec: JobSpec, job_dir: Path, on_progress: ProgressFn, tick: TickFn) -> JobResult: ...


class SubprocessJobRunner:
    """``python -m trainer.job``: stdout carries JSON lines, stderr goes to ``job_dir/train.log``."""

    def __init__(self, python: str | None = None, tick_interval_s: float = 0.5) -> None:
        self.python = python or sys.executable
        self.tick_interval_s = tick_interval_s

    def run(self, spec: JobSpec, job_dir: Path, on_progress: ProgressFn, tick: TickFn) -> JobResult:
        job_dir.mkdir(parents=True, exist_ok=True)
        spec_path, result_path, log_path = job_dir / "spec.json", job_dir / "result.json", job_dir / "train.log"
        spec_path.write_text(spec.model_dump_json())
        result_path.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "trainer.job", str(spec_path), str(result_path)],
                stdout=subprocess.PIPE, stderr=log, env=env, cwd=root,
            )
            lines: queue.Queue[bytes | None] = queue.Queue()
            reader = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
            reader.start()
            finished = False
            while not finished:
                tick()
                deadline = time.monotonic() + self.tick_interval_s
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        line = lines.get(timeout=left)
                    except queue.Empty:
                        break
                    if line is None:
                        finished = True
                        break
                    _relay(line, on_progress)
            proc.wait()
        if result_path.exists():
            return JobResult.model_validate_json(result_path.read_text())
        return JobResult(
            status="failed",
            error_type="JobCrashed",
            cause=f"the training process exited with {proc.returncode} without a result; "
                  f"last log lines: {_tail(log_path)}",
        )


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
