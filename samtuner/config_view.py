"""``samtuner config show``: the effective configuration as YAML, each value marked with where it came from."""

from __future__ import annotations

from typing import Any

import yaml

FILE, DEFAULT = "file", "default"


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def annotated_yaml(effective: dict[str, Any], raw: Any, source: str | None) -> str:
    """``effective`` (a Config's JSON dump) as YAML, every leaf marked '# file' or '# default'.

    ``raw`` is the file as read: a value is from the file when its key is in it (null included: in
    training.dpo a null means TRL's own default).
    """
    head = (
        f"# values marked 'file' come from {source}; the others are defaults defined in code"
        if source
        else "# no config file: every value is a default defined in code"
    )
    lines = [head]
    _render(effective, raw if isinstance(raw, dict) else {}, 0, lines)
    return "\n".join(lines) + "\n"


def _render(data: dict[str, Any], raw: dict[str, Any], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    leaves = {k: f"{k}: {_scalar(v)}" for k, v in data.items() if not (isinstance(v, dict) and v)}
    width = max((len(text) for text in leaves.values()), default=0)
    for key, value in data.items():
        if key in leaves:
            lines.append(f"{pad}{leaves[key]:<{width}}  # {FILE if key in raw else DEFAULT}")
            continue
        lines.append(f"{pad}{key}:")
        sub = raw.get(key)
        _render(value, sub if isinstance(sub, dict) else {}, depth + 1, lines)
