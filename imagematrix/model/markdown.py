"""Text from data (a GPU run record's note, test names, GPU name, ...) made inert in the generated Markdown pages.

`text` is the one escaping helper of the generated docs: whatever the value holds, it renders as that text, on one
line, in a paragraph or a table cell, and never as HTML, a heading, a list, a link, emphasis or a new table cell.
"""

from __future__ import annotations

import html
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # line breaks, tabs, escapes
_PUNCTUATION = re.compile(r"([\\`*\[\]|#~])")  # emphasis, code, links and images, cells, headings, strikethrough
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # one inside a word never starts emphasis
# at the start of a line: a list item, a thematic break or a setext heading's underline ("-", "- x", "1. x", "===")
_BLOCK_START = re.compile(r"^(?:([-+=])(?=[-+=\s]|$)|([0-9]{1,9})([.)])(?=\s|$))")


def text(value: object) -> str:
    """str(value) as inert Markdown inline text, on one line (for a paragraph, a heading or a table cell)."""
    plain = _CONTROL.sub(" ", str(value)).strip()
    escaped = _UNDERSCORE.sub(r"\\_", _PUNCTUATION.sub(r"\\\1", html.escape(plain, quote=False)))
    return _BLOCK_START.sub(lambda m: f"\\{m.group(1)}" if m.group(1) else f"{m.group(2)}\\{m.group(3)}", escaped)
