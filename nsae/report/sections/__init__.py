"""The report's sections: each `build(section, ctx) -> list[Block]` writes its figures into
ctx.out and its numbers (with the run dirs they came from) into ctx.record."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nsae.report.document import Block, Heading, Image, Text
from nsae.report.stats import Stat


@dataclass
class Ctx:
    sweep: Path
    out: Path  # <sweep>/report_files
    prefix: str = ""  # the section's file-name prefix, e.g. "s0_"
    record: dict[str, Any] = field(default_factory=dict)  # this section's report.json entry
    figures: bool = True  # False: numbers only (no figure drawn, none shown)
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # the verdict table's rows
    unconverged: dict[str, str] = field(default_factory=dict)  # condition label: why (doubling)

    def figure(self, name: str, caption: str, draw: Callable[[Path], Any]) -> list[Block]:
        """Draw figure `name` with draw(path); return the block that shows it."""
        if not self.figures:
            return []
        file = f"{self.prefix}{name}.png"
        draw(self.out / file)
        return [Image(f"{self.out.name}/{file}", caption)]

    def part(self, key: str, record: Any, title: str, intro: str) -> list[Block]:
        """Keep a part's numbers as record[key]; return its heading (level 3) and intro."""
        self.record[key] = record
        return [Heading(title, 3), Text(intro)]

    def existing(self, name: str, caption: str) -> list[Block]:
        """The block for a figure another section drew, if it did."""
        file = f"{self.prefix}{name}.png"
        shown = self.figures and (self.out / file).is_file()
        return [Image(f"{self.out.name}/{file}", caption)] if shown else []


def natural(name: str) -> list:
    """A sort key that orders numbers by value: 2_x before 10_x."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def fmt_stat(s: Stat | None) -> str:
    return "n/a" if s is None else s.text()


def stat_dict(s: Stat | None, sources: list[str]) -> dict[str, Any] | None:
    return None if s is None else {**s.as_dict(), "sources": sources}
