"""The report's HTML: one page, its CSS inline, every image a ``data:`` URI, no script, no link out.

Why so plain: the file is handed in or mailed and opened anywhere, often offline, so it must not
fetch anything (no web fonts, no CDN script, no remote image) and must print well. Everything the
page needs is in this one string. Text is escaped here (:func:`esc`); a piece of already-built
markup is marked :class:`Markup` so :func:`table` does not escape it twice.
"""

from __future__ import annotations

import html as _html
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

__all__ = ["Markup", "Section", "SECTION_TITLES", "esc", "figure", "note", "page", "table"]

SECTION_TITLES: tuple[tuple[str, str], ...] = (
    ("summary", "1. Summary"),
    ("architecture", "2. Architecture"),
    ("history", "3. Training history"),
    ("confusion", "4. Confusion matrix"),
    ("saliency", "5. Saliency"),
    ("filters", "6. Filters"),
    ("math", "7. The math"),
)
"""Section ids and headings, in report order."""

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --accent: #2f5fb3; --warn: #8a5a00;
        --warnbg: #fff6e0; --ok: #1c7a3e; --bad: #b3261e; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); margin: 0 auto; max-width: 1100px; padding: 24px 28px 64px; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 8px; padding-bottom: 10px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 2px 0; color: var(--muted); }
nav { font-size: 13px; color: var(--muted); margin: 8px 0 18px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 12px; }
section { margin: 30px 0 10px; page-break-inside: auto; }
h2 { font-size: 21px; margin: 0 0 4px; border-bottom: 1px solid var(--line); padding-bottom: 3px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.how { margin: 2px 0 12px; color: var(--muted); font-size: 13px; font-style: italic; }
p.why { background: var(--warnbg); color: var(--warn); border-left: 4px solid #e0a800;
        padding: 6px 10px; margin: 8px 0; font-size: 14px; }
p.small, li.small { font-size: 13px; color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.ok { color: var(--ok); } td.bad { color: var(--bad); font-weight: 600; }
figure { margin: 8px 0 16px; }
figure img { max-width: 100%; height: auto; image-rendering: auto; }
figcaption { font-size: 13px; color: var(--muted); }
ul.sentences li { margin: 2px 0; }
pre { background: #f6f7f9; border: 1px solid var(--line); padding: 8px 10px; font-size: 13px;
      overflow-x: auto; white-space: pre-wrap; }
.tag { display: inline-block; background: #ffe8cc; color: #7a3d00; border-radius: 4px;
       padding: 0 6px; font-size: 12px; font-weight: 600; }
footer { margin-top: 40px; font-size: 12px; color: var(--muted); border-top: 1px solid var(--line); }
@media print { body { max-width: none; padding: 0 8mm; } nav { display: none; }
               figure, table { page-break-inside: avoid; } }
"""


class Markup(str):
    """A string of finished HTML (not escaped again by :func:`table`)."""


def esc(text: Any) -> Markup:
    """Escaped text (``Markup`` passes through unchanged)."""
    if isinstance(text, Markup):
        return text
    return Markup(_html.escape("" if text is None else str(text), quote=True))


def note(text: str) -> Markup:
    """The "why this part is missing" box (one sentence: ends with exactly one full stop)."""
    text = str(text).strip()
    return Markup(f'<p class="why">{esc(text if text.endswith((".", "?", "!")) else text + ".")}</p>')


def figure(uri: str, caption: str = "", alt: str = "") -> Markup:
    """An embedded image (``uri`` must be a ``data:image/png;base64,`` URI) with an optional caption."""
    if not uri.startswith("data:image/png;base64,"):
        raise ValueError("report images must be embedded PNG data URIs")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return Markup(f'<figure><img src="{uri}" alt="{esc(alt or caption)}">{cap}</figure>')


def _cell(v: Any) -> str:
    if isinstance(v, Markup):
        return f"<td>{v}</td>"
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, (int, float)):
        return f'<td class="num">{esc(v)}</td>'
    return f"<td>{esc(v)}</td>"


def table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]], *, caption: str = "") -> Markup:
    """An HTML table (``header=None``: none; a key/value table); numbers are right-aligned,
    ``Markup`` cells are inserted as they are."""
    head = "" if header is None else "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>"
    body = "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return Markup(f"<table>{cap}{head}<tbody>{body}</tbody></table>")


@dataclass
class Section:
    """One numbered section: its id (one of :data:`SECTION_TITLES`), the one-line "how it was
    computed", and its body (finished HTML parts, in order)."""

    key: str
    how: str
    parts: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return dict(SECTION_TITLES)[self.key]

    def add(self, *parts: str) -> "Section":
        self.parts.extend(parts)
        return self

    def html(self) -> str:
        return (f'<section id="{self.key}"><h2>{esc(self.title)}</h2>'
                f'<p class="how">{esc(self.how)}</p>' + "".join(self.parts) + "</section>")


def page(title: str, subtitle: Sequence[str], sections: Sequence[Section], footer: str = "") -> str:
    """The whole self-contained document."""
    nav = "".join(f'<a href="#{s.key}">{esc(s.title)}</a>' for s in sections)
    sub = "".join(f"<p>{esc(s) if not isinstance(s, Markup) else s}</p>" for s in subtitle)
    body = "".join(s.html() for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1>{sub}</header><nav>{nav}</nav>{body}"
            f"<footer><p>{esc(footer)}</p></footer></body></html>\n")
