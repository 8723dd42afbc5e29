"""The output formats of kbrules check, in one table: how each input's result is
written to standard output. The CLI picks one by name and only calls add() and end().

Whatever stdout can encode, the report gets out: JSON falls back to \\u escapes and
text to backslash escapes when stdout is not UTF-8, so that exit 1 never means
"could not print"."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any, Optional, Union

from . import __version__
from .draw import GLYPHS, Style, page_html, page_svg, script
from .model import Report
from .report import to_dict, to_text
from .text import show


@dataclass(frozen=True)
class Result:
    """What checking one input gave."""

    source: str  # as the user named it
    code: int  # the exit status it alone would give: 0, 1 or 2
    report: Union[Report, dict[str, Any], None] = None  # a dict from the jq engine
    error: Optional[str] = None  # the one-line reason, when code is 2
    skipped: Optional[str] = None  # why this input (a domain's disk) is not checked

    def data(self) -> dict[str, Any]:
        """The JSON report."""
        assert self.report is not None
        return self.report if isinstance(self.report, dict) else to_dict(self.report)

    def entry(self) -> dict[str, Any]:
        """The JSON report with the input's name, or the input's name and its error,
        or why it was skipped."""
        if self.error is not None:
            return {"input": self.source, "error": self.error}
        if self.skipped is not None:
            return {"input": self.source, "skipped": self.skipped}
        return {"input": self.source, **self.data()}


def _utf8() -> bool:
    return (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"


def terminal_style() -> Style:
    """How to draw text on this stdout: the width of the terminal (80 when stdout is
    not one; $COLUMNS wins when set), Unicode when its encoding can show the glyphs,
    colour only on a terminal and never with $NO_COLOR set (no-color.org) or TERM=dumb."""
    tty = sys.stdout.isatty()
    width = 80
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        width = int(columns)
    elif tty:
        width = shutil.get_terminal_size((80, 24)).columns
    try:
        "".join(GLYPHS[True].values()).encode(sys.stdout.encoding or "ascii")
        unicode = True
    except (UnicodeEncodeError, LookupError):
        unicode = False
    colour = tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    return Style(width=max(width, 40), unicode=unicode, colour=colour)


def write_markup(text: str) -> None:
    """HTML or SVG: what stdout cannot encode becomes a character reference."""
    if not _utf8():
        text = text.encode("ascii", "xmlcharrefreplace").decode("ascii")
    sys.stdout.write(text)
    sys.stdout.flush()


def write_text(text: str) -> None:
    if not _utf8() and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    print(text)


def write_json(value: Any, indent: Optional[int] = 2) -> None:
    print(json.dumps(value, indent=indent, ensure_ascii=not _utf8()))


class Output:
    """One output format. `batch`: several inputs in this run (each result then names
    its input); otherwise exactly one result, never an error (the CLI reports that)."""

    json = True  # the format is JSON: the jq engine can produce it
    named = False  # each result names its input, even when there is one input
    help = ""

    def __init__(self, batch: bool) -> None:
        self.batch = batch

    def add(self, result: Result) -> None:
        raise NotImplementedError

    def end(self) -> None:
        """After the last result."""


class TextOutput(Output):
    json = False
    help = "for people: the chain, a table of bitmaps, the findings and what to do"

    def add(self, result: Result) -> None:
        if result.error is not None:
            body = f"error: {result.error}"
        elif result.skipped is not None:
            body = f"skipped: {show(result.skipped)}"
        elif isinstance(result.report, Report):
            body = to_text(result.report, terminal_style())
        else:
            raise TypeError("the text format needs a report of the Python engine")
        write_text(f"== {show(result.source)} ==\n{body}\n" if self.batch else body)


class JsonOutput(Output):
    help = "one JSON report (README: 'JSON report'); with several inputs, an array of them, each with 'input'"

    def __init__(self, batch: bool) -> None:
        super().__init__(batch)
        self.entries: list[dict[str, Any]] = []

    def add(self, result: Result) -> None:
        if self.batch:
            self.entries.append(result.entry())
        else:
            write_json(result.data())

    def end(self) -> None:
        if self.batch:
            write_json(self.entries)


class JsonlOutput(Output):
    named = True
    help = "one JSON report per line, each with 'input' (or 'input' and 'error')"

    def add(self, result: Result) -> None:
        write_json(result.entry(), indent=None)


class _PageOutput(Output):
    """A whole document written at the end, with one part per input."""

    json = False

    def __init__(self, batch: bool) -> None:
        super().__init__(batch)
        self.results: list[tuple[str, Union[Report, str]]] = []

    def add(self, result: Result) -> None:
        if result.error is not None:
            self.results.append((result.source, result.error))
        elif result.skipped is not None:
            self.results.append((result.source, f"skipped: {result.skipped}"))
        elif isinstance(result.report, Report):
            self.results.append((result.source, result.report))
        else:
            raise TypeError(f"the {type(self).__name__} format needs a report of the Python engine")

    def page(self) -> str:
        raise NotImplementedError

    def end(self) -> None:
        write_markup(self.page())


class HtmlOutput(_PageOutput):
    help = ("one self-contained HTML page (the chain picture, the bitmaps, the findings; no "
            "script, nothing fetched) to open in a browser or attach to a ticket")

    def page(self) -> str:
        return page_html(self.results, __version__)


class SvgOutput(_PageOutput):
    help = "the chain picture as one self-contained SVG image"

    def page(self) -> str:
        return page_svg(self.results)


class ScriptOutput(_PageOutput):
    help = "the repair plan as a POSIX shell script, to read and then run (what kbrules plan prints)"

    def page(self) -> str:
        return script(self.results, os.getcwd(), __version__)

    def end(self) -> None:
        write_text(self.page().rstrip("\n"))


FORMATS: dict[str, type[Output]] = {"text": TextOutput, "json": JsonOutput, "jsonl": JsonlOutput,
                                    "html": HtmlOutput, "svg": SvgOutput, "script": ScriptOutput}
