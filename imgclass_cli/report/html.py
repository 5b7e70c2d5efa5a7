"""One self-contained HTML page from plain data: sections of text, tables, PNG figures and galleries of cards (a
card: one or more images side by side, and lines of text). Images are embedded as data: URIs; the page has no
script and loads nothing (its Content-Security-Policy forbids it), so it works opened from disk, offline.

The renderer takes no markup from its callers: every text (class names, file names, titles) is escaped here, so a
class folder named `<script>` shows as those characters. Anchors are the caller's own identifiers (checked).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

from imgclass_cli.report.output import visible

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ANCHOR = re.compile(r"[a-z][a-z0-9-]{0,63}")

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;
padding:0 16px;color:#1b1b1b;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}p{margin:6px 0}.muted{color:#666}
table{border-collapse:collapse;margin:8px 0}th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:8px 0}figure img{max-width:100%;height:auto}figcaption{color:#666;font-size:12px}
.gallery{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:4px;padding:6px;max-width:480px}
.card .images{display:flex;gap:4px}.card img{image-rendering:pixelated;display:block}
.card p{margin:2px 0;font-size:12px;overflow-wrap:anywhere}
nav a{margin-right:12px}
.columns{display:flex;flex-wrap:wrap;gap:8px 40px;align-items:flex-start}
.columns>section>h3{margin-top:12px}
"""


def text(value) -> str:
    """A user-derived string as HTML text: controls shown as escapes (output.visible), markup characters escaped."""
    return html.escape(visible(value), quote=True)


def data_uri(png: bytes) -> str:
    if not isinstance(png, bytes) or not png.startswith(PNG_SIGNATURE):
        raise ValueError("report/html.py embeds PNG images only")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of PNG bytes, from the IHDR chunk."""
    data_uri(png)  # checks the signature
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _checked(name: str) -> str:
    if not isinstance(name, str) or not _ANCHOR.fullmatch(name):
        raise ValueError(f"anchor {name!r}: a lower-case letter, then letters, digits and '-' only")
    return name


def _anchor(name: str | None) -> str:
    return f' id="{_checked(name)}"' if name is not None else ""


@dataclass(frozen=True)
class Paragraph:
    text: str
    muted: bool = False


@dataclass(frozen=True)
class Link:
    """Text linking to an anchor of the same page (never an address outside it)."""

    text: str
    anchor: str


@dataclass(frozen=True)
class Table:
    """Columns and rows of cells: str, int, float (shown with `digits` decimals), None (empty) or a Link."""

    columns: list[str]
    rows: list[list]
    digits: int = 4
    caption: str = ""


@dataclass(frozen=True)
class Image:
    png: bytes
    alt: str
    caption: str = ""
    width: int | None = None  # CSS pixels; None: the image's own size
    height: int | None = None


@dataclass(frozen=True)
class Card:
    """Images side by side (an image and its heatmap overlay, a pair of near duplicates), then lines of text."""

    images: list[Image]
    lines: list[str]
    anchor: str | None = None


@dataclass(frozen=True)
class Gallery:
    cards: list[Card]
    empty: str = "nothing to show"


@dataclass(frozen=True)
class Section:
    title: str
    blocks: list = field(default_factory=list)  # Paragraph, Table, Image, Gallery, a nested Section or Columns
    anchor: str | None = None


@dataclass(frozen=True)
class Columns:
    """Sections side by side, wrapping onto more rows when the window is narrow (two short tables; a group of
    small galleries)."""

    sections: list[Section]


@dataclass(frozen=True)
class Page:
    title: str
    sections: list  # Section or Columns of them
    subtitle: list[str] = field(default_factory=list)
    contents: bool = True  # a line of links to the sections that have an anchor


def _cell(value, digits: int) -> str:
    if isinstance(value, Link):
        return f'<td><a href="#{_checked(value.anchor)}">{text(value.text)}</a></td>'
    if isinstance(value, bool) or value is None:
        return f"<td>{'' if value is None else text(value)}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:.{digits}f}</td>'
    return f"<td>{text(value)}</td>"


def _table(t: Table) -> str:
    head = "".join(f"<th>{text(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(_cell(v, t.digits) for v in row) + "</tr>\n" for row in t.rows)
    caption = f"<caption>{text(t.caption)}</caption>" if t.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"


def _img(im: Image) -> str:
    size = "".join(f' {k}="{int(v)}"' for k, v in (("width", im.width), ("height", im.height)) if v)
    return f'<img src="{data_uri(im.png)}" alt="{text(im.alt)}"{size}>'


def _figure(im: Image) -> str:
    caption = f"<figcaption>{text(im.caption)}</figcaption>" if im.caption else ""
    return f"<figure>{_img(im)}{caption}</figure>\n"


def _card(c: Card) -> str:
    images = "".join(_img(im) for im in c.images)
    lines = "".join(f"<p>{text(line)}</p>" for line in c.lines)
    return f'<div class="card"{_anchor(c.anchor)}><div class="images">{images}</div>{lines}</div>\n'


def _block(block, level: int) -> str:
    if isinstance(block, Paragraph):
        return f'<p{" class=muted" if block.muted else ""}>{text(block.text)}</p>\n'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Image):
        return _figure(block)
    if isinstance(block, Gallery):
        if not block.cards:
            return f'<p class="muted">{text(block.empty)}</p>\n'
        return '<div class="gallery">\n' + "".join(_card(c) for c in block.cards) + "</div>\n"
    if isinstance(block, Section):
        return _section(block, level + 1)
    if isinstance(block, Columns):
        return _columns(block, level + 1)
    raise TypeError(f"report/html.py cannot render {type(block).__name__}")


def _section(s: Section, level: int = 2) -> str:
    h = min(level, 6)
    return f"<section{_anchor(s.anchor)}><h{h}>{text(s.title)}</h{h}>\n" + "".join(_block(b, level) for b in s.blocks) \
        + "</section>\n"


def _columns(c: Columns, level: int) -> str:
    return '<div class="columns">\n' + "".join(_section(s, level) for s in c.sections) + "</div>\n"


def _top(item) -> str:
    return _columns(item, 2) if isinstance(item, Columns) else _section(item)


def render(page: Page) -> str:
    """The page as one HTML document (a str; write it as UTF-8)."""
    subtitle = "".join(f'<p class="muted">{text(line)}</p>\n' for line in page.subtitle)
    tops = [s for item in page.sections for s in (item.sections if isinstance(item, Columns) else [item])]
    links = [f'<a href="#{_checked(s.anchor)}">{text(s.title)}</a>' for s in tops if s.anchor]
    nav = f"<nav>{''.join(links)}</nav>\n" if page.contents and links else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{text(page.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>{text(page.title)}</h1>\n{subtitle}{nav}</header>\n"
        + "".join(_top(item) for item in page.sections)
        + "</body>\n</html>\n"
    )
