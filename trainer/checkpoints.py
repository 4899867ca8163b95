"""Resumable checkpoints of a job, under ``{artifact root}/checkpoints/{request id}/``.

A checkpoint directory belongs to one *run*: the same config, dataset, retry overrides and kind of
device. Its ``run.json`` records the run key; a job resumes only from a checkpoint of its own run
(a retry with a smaller batch starts over). A checkpoint counts once ``trainer_state.json`` is
written, which the Trainer does last, so a worker killed while saving leaves the previous one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def run_key(config_sha256: str, dataset_sha256: str, overrides: Mapping[str, Any], device: str) -> str:
    payload = json.dumps(
        {"config": config_sha256, "dataset": dataset_sha256, "overrides": dict(overrides), "device": device},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    step: int


def latest_checkpoint(directory: Path) -> ResumePoint | None:
    found = []
    for child in directory.iterdir() if directory.is_dir() else ():
        match = _CHECKPOINT.match(child.name)
        if match and (child / "trainer_state.json").is_file():
            found.append(ResumePoint(child, int(match.group(1))))
    return max(found, key=lambda p: p.step) if found else None


def prepare(directory: Path, key: str) -> ResumePoint | None:
    """The checkpoint to resume from, if ``directory`` holds one of run ``key``; otherwise start clean."""
    recorded = directory / RUN_FILE
    try:
        same_run = json.loads(recorded.read_text()).get("run_key") == key
    except (OSError, json.JSONDecodeError):
        same_run = False
    if same_run:
        point = latest_checkpoint(directory)
        if point is not None:
            return point
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps({"run_key": key}))
    return None


def discard(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
