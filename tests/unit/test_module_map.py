"""IMPLEMENTATION.md's module map matches the tree (issue 9): every module of
the jobq package is named in its layer's row, and every name there exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def documented() -> dict[str, set[str]]:
    """Layer folder -> the module names its row lists (`views/` and `live/` prefix theirs)."""
    text = (ROOT / "IMPLEMENTATION.md").read_text()
    section = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `jobq/(\w+)(?:\.py)?` \|([^|]*)\|", line)
        if not match:
            continue
        names: set[str] = set()
        prefix = ""
        for token in re.findall(r"(\w+/)|`(\w+)`", match.group(2)):
            folder, name = token
            if folder:
                prefix = folder
            elif name:
                names.add(prefix + name)
        rows[match.group(1)] = names
    return rows


def actual() -> dict[str, set[str]]:
    package = ROOT / "jobq"
    rows: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        parts = path.relative_to(package).with_suffix("").parts
        if len(parts) == 1:
            rows.setdefault(parts[0], set())
            continue
        rows.setdefault(parts[0], set()).add("/".join(parts[1:]))
    return rows


def test_the_module_map_names_every_module_and_nothing_else() -> None:
    assert documented() == actual()
