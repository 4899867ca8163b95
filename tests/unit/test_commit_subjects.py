"""Commit subjects stay short (the detail goes in the body): every commit since the rule was made
has a subject of at most 72 characters. Older history is left as it is."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SINCE = "9ca76fb"  # the last commit before the rule (issue 11)
LIMIT = 72


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_commit_subjects_since_the_rule_are_short() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no history to check")
    if git("merge-base", "--is-ancestor", SINCE, "HEAD").returncode != 0:
        pytest.skip(f"{SINCE} is not in this clone's history (shallow clone)")
    subjects = git("log", "--format=%h %s", f"{SINCE}..HEAD").stdout.splitlines()
    assert subjects, "no commits since the rule: the range is wrong"
    too_long = [line for line in subjects if len(line.split(" ", 1)[1]) > LIMIT]
    assert too_long == [], f"subjects over {LIMIT} characters: {too_long}"
