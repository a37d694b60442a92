"""The results table: one `Row` per figure, rendered as Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("benchmark", "conditions", "result", "p50", "p99", "target", "met", "notes")


@dataclass(frozen=True, slots=True)
class Row:
    benchmark: str
    conditions: str
    result: str
    p50: str = "—"
    p99: str = "—"
    target: str = "—"
    met: bool | None = None  # None: no target
    notes: str = ""

    def cells(self) -> list[str]:
        verdict = "—" if self.met is None else "yes" if self.met else "**no**"
        return [self.benchmark, self.conditions, self.result, self.p50, self.p99, self.target, verdict, self.notes]


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def render(rows: list[Row], *, title: str, preamble: list[str]) -> str:
    """The whole Markdown document: a title, context lines, the table."""
    lines = [f"# {title}", "", *preamble, "", _line(list(COLUMNS)), _line(["---"] * len(COLUMNS))]
    lines.extend(_line(row.cells()) for row in rows)
    return "\n".join(lines) + "\n"


def write(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
