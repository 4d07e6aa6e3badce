"""The page: sections of blocks, a table of contents, inline CSS; written with its figures and tables.

A block is anything with ``to_html()`` and ``files()`` (:class:`~medclf.reporting.tables.Table`,
:class:`~medclf.reporting.figures.Figure`, and the small text blocks here). :func:`write_page` writes every
block's files (``figures/*.png``, ``tables/*.csv``, ``tables/*.md``) beside the HTML, which is one
self-contained file: styles inline, images as data URIs, no script, nothing fetched.
"""

from __future__ import annotations

import datetime as _dt
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from medclf import __version__
from medclf.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["Block", "Grid", "KeyValues", "Page", "Paragraph", "Preformatted", "Section", "slug", "write_page"]

_OUTPUT_DIRS = {"figures": ".png", "tables": (".csv", ".md")}


class Block(Protocol):
    def to_html(self) -> str: ...

    def files(self) -> dict[str, bytes]: ...


def slug(text: str) -> str:
    """A lowercase identifier for anchors and file names: ``"ROC curves (test)"`` -> ``"roc-curves-test"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


@dataclass
class Paragraph:
    """Plain text (escaped); ``kind`` "note" is smaller and grey, "warning" is boxed."""

    text: str
    kind: str = ""

    def to_html(self) -> str:
        cls = f' class="{self.kind}"' if self.kind else ""
        return f"<p{cls}>{html.escape(self.text)}</p>"

    def files(self) -> dict[str, bytes]:
        return {}


@dataclass
class Preformatted:
    """Monospaced text kept as is (a YAML config)."""

    text: str

    def to_html(self) -> str:
        return f"<pre>{html.escape(self.text)}</pre>"

    def files(self) -> dict[str, bytes]:
        return {}


@dataclass
class KeyValues:
    """A short definition list (run facts): ``[(key, value), ...]``."""

    items: Sequence[tuple[str, str]]

    def to_html(self) -> str:
        rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in self.items)
        return f'<dl class="facts">{rows}</dl>'

    def files(self) -> dict[str, bytes]:
        return {}


@dataclass
class Grid:
    """Blocks (figures) side by side, wrapping to the page width."""

    blocks: Sequence[Block]
    wide: bool = False  # fewer, larger columns

    def to_html(self) -> str:
        cls = "grid wide" if self.wide else "grid"
        return f'<div class="{cls}">' + "".join(b.to_html() for b in self.blocks) + "</div>"

    def files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for block in self.blocks:
            out |= block.files()
        return out


@dataclass
class Section:
    """A titled part of the page, listed in the table of contents; subsections are one level down."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)
    anchor: str = ""

    def __post_init__(self) -> None:
        self.anchor = self.anchor or slug(self.title)

    def files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for block in self.blocks:
            out |= block.files()
        for sub in self.subsections:
            out |= sub.files()
        return out

    def to_html(self, level: int = 2) -> str:
        parts = [f'<section id="{self.anchor}"><h{level}>{html.escape(self.title)}</h{level}>']
        parts += [block.to_html() for block in self.blocks]
        parts += [sub.to_html(level + 1) for sub in self.subsections]
        parts.append("</section>")
        return "\n".join(parts)


@dataclass
class Page:
    """A report page: a title, facts under it, and sections."""

    title: str
    sections: list[Section]
    subtitle: str = ""

    def toc(self) -> str:
        items = []
        for section in self.sections:
            subs = "".join(
                f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in section.subsections
            )
            subs = f"<ol>{subs}</ol>" if subs else ""
            items.append(f'<li><a href="#{section.anchor}">{html.escape(section.title)}</a>{subs}</li>')
        return f'<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>{"".join(items)}</ol></nav>'

    def to_html(self) -> str:
        written = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        subtitle = f'<p class="subtitle">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        body = "\n".join(section.to_html() for section in self.sections)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{html.escape(self.title)}</title>'
            f"<style>{CSS}</style></head><body>"
            f"<header><h1>{html.escape(self.title)}</h1>{subtitle}</header>{self.toc()}"
            f"<main>{body}</main>"
            f"<footer>Written by medclf {html.escape(__version__)} on {html.escape(written)}.</footer>"
            "</body></html>\n"
        )

    def files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for section in self.sections:
            for path in section.files():
                if path in out:
                    raise ValueError(f"two blocks of the page write {path}")
            out |= section.files()
        return out


def write_page(page: Page, folder: Path, filename: str) -> Path:
    """Write ``folder/filename`` and every figure and table of the page under ``folder``.

    Figures and tables a previous report left that this one no longer has are removed, so the folders always
    match the page.
    """
    folder = Path(folder)
    files = page.files()
    for sub, suffixes in _OUTPUT_DIRS.items():
        for old in (folder / sub).glob("*") if (folder / sub).is_dir() else ():
            rel = f"{sub}/{old.name}"
            if old.is_file() and old.name.endswith(suffixes) and rel not in files:
                old.unlink()
    for rel, content in files.items():
        atomic_write_bytes(folder / rel, content)
    target = folder / filename
    atomic_write_text(target, page.to_html())
    return target


CSS = """
:root{--ink:#1d2530;--muted:#5b6573;--line:#d9dee5;--soft:#f4f6f9;--accent:#2458a6}
*{box-sizing:border-box}
html{font-size:15px}
body{margin:0 auto;max-width:1180px;padding:28px 36px 48px;color:var(--ink);background:#fff;
 font-family:"Inter","Segoe UI","Helvetica Neue",Helvetica,Arial,"Liberation Sans",sans-serif;line-height:1.5}
h1{font-size:1.9rem;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:1.4rem;margin:40px 0 12px;padding-bottom:6px;border-bottom:2px solid var(--line)}
h3{font-size:1.1rem;margin:26px 0 8px}
h4{font-size:1rem;margin:18px 0 6px}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
header{border-bottom:1px solid var(--line);padding-bottom:10px;margin-bottom:18px}
.subtitle{color:var(--muted);margin:0}
nav.toc{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px 22px;margin:0 0 8px}
nav.toc h2{font-size:1rem;margin:4px 0;border:0;padding:0}
nav.toc ol{margin:4px 0;padding-left:20px;columns:2;column-gap:36px}
nav.toc ol ol{columns:1;font-size:.9em}
nav.toc li{break-inside:avoid}
p{margin:8px 0;max-width:80ch}
p.note,.table p.note{color:var(--muted);font-size:.85rem;margin:4px 0 0}
p.warning{background:#fff6e0;border-left:4px solid #e0a100;padding:8px 12px}
pre{background:var(--soft);border:1px solid var(--line);border-radius:4px;padding:10px 14px;font-size:.8rem;
 line-height:1.35;overflow-x:auto;white-space:pre-wrap;font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;margin:10px 0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0}
.table{margin:14px 0 20px;overflow-x:auto;break-inside:avoid}
table{border-collapse:collapse;font-size:.85rem;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:0 0 6px;caption-side:top}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{border-bottom:2px solid var(--ink);font-weight:600;white-space:nowrap}
tbody th{font-weight:500}
tbody tr:nth-child(even){background:#fafbfc}
.num{text-align:right;white-space:nowrap}
tr.em th,tr.em td{font-weight:700;border-top:1.5px solid var(--ink)}
figure{margin:10px 0 18px;break-inside:avoid}
figure img{max-width:100%;height:auto;display:block;border:1px solid #eef0f3}
figcaption{color:var(--muted);font-size:.82rem;margin-top:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:6px 18px}
.grid.wide{grid-template-columns:repeat(auto-fill,minmax(520px,1fr))}
footer{margin-top:48px;padding-top:10px;border-top:1px solid var(--line);color:var(--muted);font-size:.8rem}
@media print{
 @page{size:A4;margin:14mm 12mm}
 html{font-size:10.5pt}
 body{max-width:none;padding:0}
 a{color:inherit}
 /* page 1: title, contents, first section; every later section starts a page (not the contents' h2) */
 nav.toc{background:none;padding:4px 14px}
 nav.toc ol{columns:3;column-gap:24px}
 header{margin-bottom:10px}
 main>section:first-child>h2{margin-top:14px}
 main>section+section{break-before:page}
 main>section+section>h2{margin-top:0}
 main>section:first-child dl.facts{grid-template-columns:max-content 1fr max-content 1fr}
 main>section:first-child figure img{max-height:62mm;width:auto}
 h2,h3,h4,caption{break-after:avoid}
 .table{overflow:visible;margin:10px 0 14px}
 tbody tr:nth-child(even){background:none}
 pre{white-space:pre-wrap;break-inside:auto}
 .grid,.grid.wide{grid-template-columns:repeat(2,1fr)}
}
""".strip()
