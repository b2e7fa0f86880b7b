"""A small HTML page builder: one self-contained file, images embedded, opens offline in any browser."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from headlab.core.io import atomic_write_text

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1d2127; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.lead { color: #555; } .finding { background: #f4f7fb; border-left: 4px solid #3b73b9; padding: 0.6em 1em; }
figure { display: inline-block; margin: 0.6em 1em 0.6em 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { font-size: 0.85em; color: #555; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
"""


class Page:
    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css: str | None = None) -> None:
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def bullets(self, items: Sequence[str], css: str | None = None) -> None:
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<ul{cls}>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")

    def figure(self, png: str | Path, caption: str) -> None:
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        self.parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        def cell(v: object) -> str:
            return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def render(self) -> str:
        return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}"
                f"</title><style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.parts) + "</body></html>\n")

    def write(self, path: str | Path) -> None:
        atomic_write_text(path, self.render())
