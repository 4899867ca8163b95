"""Commit subjects stay short (the detail goes in the body): every commit since the rule was made
has a subject of at most 72 characters. Older history is left as it is."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SINCE = "9ca76fb"  # the last commit before the rule (issue 11)
LIMIT = 72


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_commit_subjects_since_the_rule_are_short() -> None:
    assert git("rev-parse", "--git-dir").returncode == 0, "run the tests from a git checkout: they read its history"
    # A shallow clone may not hold SINCE; then every commit it holds came after it.
    since_present = git("cat-file", "-e", f"{SINCE}^{{commit}}").returncode == 0
    subjects = git("log", "--format=%h %s", f"{SINCE}..HEAD" if since_present else "HEAD").stdout.splitlines()
    assert subjects, "no commits since the rule: the range is wrong"
    too_long = [line for line in subjects if len(line.split(" ", 1)[1]) > LIMIT]
    assert too_long == [], f"subjects over {LIMIT} characters: {too_long}"
