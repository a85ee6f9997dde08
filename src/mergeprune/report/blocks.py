"""The report as a list of blocks: headings, paragraphs, bullets, tables and figures (the writers
turn them into Markdown and HTML).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    """A section title."""

    level: int
    text: str


@dataclass
class Text:
    """A paragraph."""

    text: str


@dataclass
class Bullets:
    """A bulleted list."""

    items: list[str]


@dataclass
class Table:
    """A table with a header row."""

    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    """A PNG figure written next to the report."""

    path: Path
    caption: str


Block = Heading | Text | Bullets | Table | Figure


def optional_table(title: str, table: Table | None) -> list[Block]:
    """A titled table, or nothing when there is no data."""
    return [] if table is None else [Heading(3, title), table]


def figure_blocks(figures: dict[str, Path], kind: str, caption: str) -> list[Block]:
    """The figure of a kind, if it was drawn."""
    return [Figure(figures[kind], caption)] if kind in figures else []
