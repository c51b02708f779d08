"""A small document model: headings, paragraphs, tables and figures, rendered to
Markdown and to one standalone HTML page from the same list of blocks, so the two agree.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

# What Markdown would read as markup in a value (a message "5* ensemble", a path
# \\nas\share): backslash-escaped. An underscore inside a word (val_log_loss) is plain
# text to CommonMark and stays as written.
_MARKUP = re.compile(r"[\\`*\[\]~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def _md_text(text: str) -> str:
    """Text for Markdown: markup characters and HTML-special ones escaped, so values show
    as written."""
    return html.escape(_MARKUP.sub(lambda match: "\\" + match.group(), text), quote=False)


@dataclass
class Heading:
    """A section title; level 1 is the page title."""

    level: int
    text: str

    def markdown(self) -> str:
        return f"{'#' * self.level} {_md_text(self.text)}"

    def html(self) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>"


@dataclass
class Paragraph:
    """A line of text, optionally bold."""

    text: str
    strong: bool = False

    def markdown(self) -> str:
        return f"**{_md_text(self.text)}**" if self.strong else _md_text(self.text)

    def html(self) -> str:
        text = html.escape(self.text)
        return f"<p><strong>{text}</strong></p>" if self.strong else f"<p>{text}</p>"


@dataclass
class Table:
    """A table of already formatted cells."""

    header: list[str]
    rows: list[list[str]]
    align: str = ""  # one letter per column, "l" or "r"; default: first left, the rest right

    def _alignment(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)

    def markdown(self) -> str:
        def line(cells):
            cells = [_md_text(cell).replace("|", "\\|").replace("\n", " ") for cell in cells]
            return "| " + " | ".join(cells) + " |"

        rule = "|" + "|".join("---:" if side == "r" else ":---" for side in self._alignment()) + "|"
        return "\n".join([line(self.header), rule, *(line(row) for row in self.rows)])

    def html(self) -> str:
        classes = [' class="num"' if side == "r" else "" for side in self._alignment()]

        def line(cells, tag):
            return "<tr>" + "".join(f"<{tag}{css}>{html.escape(cell)}</{tag}>"
                                    for css, cell in zip(classes, cells, strict=True)) + "</tr>"

        body = "\n".join(line(row, "td") for row in self.rows)
        return (f"<table>\n<thead>{line(self.header, 'th')}</thead>\n"
                f"<tbody>\n{body}\n</tbody>\n</table>")


@dataclass
class Image:
    """A figure file in the run folder, linked relatively, with its caption."""

    file: str
    caption: str

    def markdown(self) -> str:
        return f"![{_md_text(self.caption)}]({self.file})"

    def html(self) -> str:
        return (f'<figure><img src="{html.escape(self.file)}" alt="{html.escape(self.caption)}">'
                f"<figcaption>{html.escape(self.caption)}</figcaption></figure>")


HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 62rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #eee; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; }
th, td { padding: .25rem .75rem; border-bottom: 1px solid #e3e3e3; text-align: left; }
th { background: #f4f5f7; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0 1.6rem; }
img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9rem; }
"""


def render_markdown(blocks: list) -> str:
    """The blocks as a Markdown document."""
    return "\n\n".join(block.markdown() for block in blocks) + "\n"


def render_html(blocks: list, title: str) -> str:
    """The blocks as one standalone HTML page: inline CSS, figures as relative links."""
    body = "\n".join(block.html() for block in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")
