"""A report as a list of blocks, rendered to Markdown (images by relative path) and to a
self-contained HTML page (images as data URIs)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: str  # relative to the report
    caption: str


Block = Heading | Text | Table | Image


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Table):
            for i, row in enumerate([b.header, *b.rows]):
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
                if i == 0:
                    out.append("|" + "---|" * len(b.header))
        else:
            out.append(f"![{b.caption}]({b.path})")
        out.append("")
    return "\n".join(out)


def data_uri(path: Path) -> str:
    """The file as a data: URI (PNG), so that the HTML page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(blocks: list[Block], title: str, base: Path) -> str:
    """A self-contained page: images are embedded from `base` / Image.path as data URIs."""
    e = html.escape
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}img{max-width:100%}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(h)}</th>" for h in b.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows
            )
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            out.append(
                f"<figure><img src='{data_uri(base / b.path)}' alt='{e(b.caption)}'>"
                f"<figcaption>{e(b.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)
