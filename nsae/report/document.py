"""A report as a list of blocks, rendered to Markdown (images by relative path) and to a
self-contained HTML page (images as data URIs).

Text and table cells take two inline marks, in both outputs: `**bold**` and links
`[text](#anchor)`. A Heading's anchor (given, or a slug of its text) is its HTML id; a
`Contents` block lists the level-2 and level-3 headings that follow it; a `Collapsed` block
is an HTML <details> element (closed) and a <details> element in Markdown too."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str | None = None

    @property
    def id(self) -> str:
        return self.anchor or slug(self.text)


@dataclass
class Text:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    anchor: str | None = None  # the HTML id of the table's container


@dataclass
class Image:
    path: str  # relative to the report
    caption: str


@dataclass
class Contents:
    """A list of links to the level-2 and level-3 headings after it."""

    title: str = "Contents"


@dataclass
class Collapsed:
    """Blocks shown on demand: HTML <details> (closed)."""

    title: str
    blocks: list[Block] = field(default_factory=list)


Block = Heading | Text | Table | Image | Contents | Collapsed


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _flat(blocks: list[Block]) -> list[Block]:
    out: list[Block] = []
    for b in blocks:
        out += [b, *_flat(b.blocks)] if isinstance(b, Collapsed) else [b]
    return out


def _toc(blocks: list[Block], start: int) -> list[tuple[int, str, str]]:
    """(level, text, id) of the level-2 and level-3 headings after position `start`."""
    return [
        (b.level, b.text, b.id)
        for b in _flat(blocks[start + 1 :])
        if isinstance(b, Heading) and b.level in (2, 3)
    ]


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for i, b in enumerate(blocks):
        if isinstance(b, Heading):
            out.append(f'<a id="{b.id}"></a>\n\n{"#" * b.level} {b.text}')
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Table):
            for j, row in enumerate([b.header, *b.rows]):
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
                if j == 0:
                    out.append("|" + "---|" * len(b.header))
        elif isinstance(b, Image):
            out.append(f"![{b.caption}]({b.path})")
        elif isinstance(b, Contents):
            out.append(f"**{b.title}**\n")
            out += [f"{'  ' * (lv - 2)}- [{t}](#{ident})" for lv, t, ident in _toc(blocks, i)]
        else:
            out += [f"<details><summary>{b.title}</summary>", "", to_markdown(b.blocks)]
            out.append("</details>")
        out.append("")
    return "\n".join(out)


def inline(text: str) -> str:
    """HTML of a text with **bold** and [text](#anchor) marks (everything else escaped)."""
    s = html.escape(text, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    return re.sub(r"\[([^\]]+)\]\((#[A-Za-z0-9_-]+)\)", r"<a href='\2'>\1</a>", s)


def data_uri(path: Path) -> str:
    """The file as a data: URI (PNG), so that the HTML page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1300px;margin:auto;padding:0 16px;"
    "line-height:1.45}h1{font-size:1.6em;margin:.6em 0 .3em}h2{margin-top:1.6em}"
    ".scroll{overflow-x:auto;max-width:100%;margin:.5em 0}"
    "table{border-collapse:collapse;font-size:.9em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}"
    "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%;height:auto}figure{margin:1em 0}"
    "details{margin:1em 0;border:1px solid #ddd;padding:.4em .8em}"
    "summary{cursor:pointer;font-weight:bold}"
    "#verdicts td,#verdicts th{white-space:normal;text-align:left;vertical-align:top}"
    "#glossary-table td{text-align:left;white-space:normal}"
    "#tuning-choices td:last-child,#tuning-choices th:last-child"
    "{white-space:normal;text-align:left;min-width:18em}"
    "#verdicts td:last-child{font-size:.85em;color:#444;min-width:16em}"
    ".toc{columns:2;font-size:.9em}"
)


def _html(blocks: list[Block], base: Path, all_blocks: list[Block]) -> list[str]:
    e = html.escape
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level} id='{e(b.id)}'>{inline(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            out.append(f"<p>{inline(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{inline(h)}</th>" for h in b.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in b.rows
            )
            ident = f" id='{e(b.anchor)}'" if b.anchor else ""
            out.append(f"<div class='scroll'{ident}><table><tr>{head}</tr>{body}</table></div>")
        elif isinstance(b, Image):
            out.append(
                f"<figure><img src='{data_uri(base / b.path)}' alt='{e(b.caption)}'>"
                f"<figcaption>{e(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, Contents):
            start = all_blocks.index(b)
            items = "".join(
                f"<li style='margin-left:{(lv - 2) * 1.2}em'><a href='#{e(ident)}'>{inline(t)}</a>"
                "</li>"
                for lv, t, ident in _toc(all_blocks, start)
            )
            out.append(f"<nav><b>{e(b.title)}</b><ul class='toc'>{items}</ul></nav>")
        else:
            inner = "\n".join(_html(b.blocks, base, all_blocks))
            out.append(f"<details><summary>{inline(b.title)}</summary>{inner}</details>")
    return out


def to_html(blocks: list[Block], title: str, base: Path) -> str:
    """A self-contained page: images are embedded from `base` / Image.path as data URIs."""
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<style>{STYLE}</style></head><body>",
        *_html(blocks, base, blocks),
        "</body></html>",
    ]
    return "\n".join(out)
