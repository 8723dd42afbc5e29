"""Text for people and shells: terminal-safe strings, POSIX shell quoting, tables and
counts. A leaf module: it imports nothing of kbrules, so any layer may use it."""

from __future__ import annotations

import json
import re
import textwrap
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


# Control characters, invisible format characters (zero-width spaces, bidi
# overrides that would reorder what follows them on a terminal or in a page), and
# lone surrogates, which no encoding can write.
_HIDDEN = ("Cc", "Cf", "Cs")


def show(text: str, width: int = 0) -> str:
    """Text safe for a terminal or a page: bytes that are not UTF-8 as \\xHH, control
    and format characters escaped (\\n, \\u202e), optionally shortened to `width`
    characters with an ellipsis."""
    text = fs_text(text)
    if any(unicodedata.category(c) in _HIDDEN for c in text):
        text = "".join(json.dumps(c)[1:-1] if unicodedata.category(c) in _HIDDEN else c for c in text)
    return text if not width or len(text) <= width else text[: width - 1] + "…"


def plain(rst: str) -> str:
    """A rules file's text (reStructuredText whose only markup is ``literal``) as plain
    text on one line: the quotes left out."""
    return " ".join(rst.replace("``", "").split())


def cols(text: str) -> int:
    """How many terminal columns `text` takes: wide (East Asian) characters two,
    combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def pad(text: str, width: int) -> str:
    """`text` padded with spaces to `width` terminal columns."""
    return text + " " * max(0, width - cols(text))


def tostring(value: Any) -> str:
    """jq's tostring: strings as they are, everything else as JSON text."""
    return value if isinstance(value, str) else json.dumps(value)


SH_ESCAPED = "'\\''"  # inside single quotes: close, an escaped quote, reopen


def sh_quote(value: Any) -> str:
    """A string for a POSIX shell: in single quotes, each ' written as '\\''."""
    return "'" + value.replace("'", SH_ESCAPED) + "'" if isinstance(value, str) else tostring(value)


def table(rows: list[list[str]], width: int = 0, indent: str = "") -> list[str]:
    """Rows as left-aligned columns, two spaces apart. With `width`, the last column's
    text wraps at spaces so that lines fit (as far as the other columns leave room)."""
    widths = [max(cols(r[i]) for r in rows) for i in range(len(rows[0]))]
    left = len(indent) + sum(w + 2 for w in widths[:-1])
    room = max(width - left, 20) if width else 0
    out = []
    for r in rows:
        last = textwrap.wrap(r[-1], room, break_long_words=False, break_on_hyphens=False) \
            if room and cols(r[-1]) > room else [r[-1]]
        out.append((indent + "  ".join(pad(c, w) for c, w in zip(r[:-1] + [last[0]], widths))).rstrip())
        out += [" " * left + more for more in last[1:]]
    return out


def count(n: int, what: str) -> str:
    """'1 rule', '2 rules'."""
    return f"{n} {what}{'' if n == 1 else 's'}"
