"""Text for people and shells: terminal-safe strings, POSIX shell quoting, tables and
counts. A leaf module: it imports nothing of kbrules, so any layer may use it."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

_SURROGATES = re.compile("[\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def fs_text(text: str) -> str:
    """A name from the command line or the file system as valid Unicode: each byte that
    is not part of valid UTF-8 (Python holds it as a lone surrogate, U+DC80-U+DCFF) is
    written as the four characters \\xHH, as Python's backslashreplace writes it."""
    return _SURROGATES.sub(_escaped, text) if _SURROGATES.search(text) else text


def show(text: str, width: int = 0) -> str:
    """Text safe for a terminal: control characters and bytes that are not UTF-8
    escaped, optionally shortened."""
    text = fs_text(text)
    if any(unicodedata.category(c) == "Cc" for c in text):
        text = "".join(json.dumps(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in text)
    return text if not width or len(text) <= width else text[: width - 1] + "…"


def tostring(value: Any) -> str:
    """jq's tostring: strings as they are, everything else as JSON text."""
    return value if isinstance(value, str) else json.dumps(value)


SH_ESCAPED = "'\\''"  # inside single quotes: close, an escaped quote, reopen


def sh_quote(value: Any) -> str:
    """A string for a POSIX shell: in single quotes, each ' written as '\\''."""
    return "'" + value.replace("'", SH_ESCAPED) + "'" if isinstance(value, str) else tostring(value)


def table(rows: list[list[str]]) -> list[str]:
    """Rows as left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def count(n: int, what: str) -> str:
    """'1 rule', '2 rules'."""
    return f"{n} {what}{'' if n == 1 else 's'}"
