"""The output formats of kbrules check, in one table: how each input's result is
written to standard output. The CLI picks one by name and only calls add() and end().

Whatever stdout can encode, the report gets out: JSON falls back to \\u escapes and
text to backslash escapes when stdout is not UTF-8, so that exit 1 never means
"could not print". Names that are not valid UTF-8 (a path's bytes) are written as
\\xHH (text.fs_text), so the output is always valid UTF-8.

Whatever stdout does, the exit status holds: each piece (a JSONL line, a report) is
written and flushed whole; a write that fails is an OutputError (exit 2), and a
regular file is cut back to before that piece, so it never ends mid-line; a reader
that went away (| head) is ReaderGone, and kbrules stops quietly."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from typing import Any, Optional, Union

from .errors import OutputError, ReaderGone
from .model import Report
from .report import to_dict, to_text
from .text import fs_text, show


@dataclass(frozen=True)
class Result:
    """What checking one input gave."""

    source: str  # as the user named it
    code: int  # the exit status it alone would give: 0, 1 or 2
    report: Union[Report, dict[str, Any], None] = None  # a dict from the jq engine
    error: Optional[str] = None  # the one-line reason, when code is 2

    def data(self) -> dict[str, Any]:
        """The JSON report."""
        assert self.report is not None
        return self.report if isinstance(self.report, dict) else to_dict(self.report)

    def entry(self) -> dict[str, Any]:
        """The JSON report with the input's name, or the input's name and its error."""
        return {"input": fs_text(self.source), "error": fs_text(self.error)} if self.error is not None else \
            {"input": fs_text(self.source), **self.data()}


def _utf8() -> bool:
    return (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "") == "utf8"


def _start(fd: int) -> Optional[int]:
    """Where the next write lands, when stdout is a regular file: what a failed write
    is cut back to."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        import fcntl

        return st.st_size if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND else os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return None


def _silence(fd: int, start: Optional[int]) -> None:
    """After a failed write: cut a regular file back to `start`, and point stdout at
    /dev/null, so that nothing still buffered can fail again at exit."""
    try:
        if start is not None:
            os.ftruncate(fd, start)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass


def write_text(text: str) -> None:
    """Write `text` and a newline to stdout as one piece: straight to its file
    descriptor, all of it or an error (OutputError, or ReaderGone for a closed pipe)."""
    out = sys.stdout
    if out is None:
        raise OutputError("cannot write the report: standard output is closed")
    piece = fs_text(text) + "\n"
    try:
        fd = out.fileno()
    except (OSError, ValueError, AttributeError):  # not a file (a StringIO): no bytes to count
        out.write(piece)
        out.flush()
        return
    data = piece.encode(out.encoding or "utf-8", "strict" if _utf8() else "backslashreplace")
    start = _start(fd)
    try:
        out.flush()  # whatever was printed before, first
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        _silence(fd, None)
        raise ReaderGone() from None
    except OSError as e:
        _silence(fd, start)
        raise OutputError(f"cannot write the report to standard output: {e.strerror or e}") from None


def say(line: str) -> None:
    """One line on stderr, prefixed 'kbrules: ' and made safe for a terminal; lost,
    not raised, when stderr itself cannot be written."""
    try:
        print(f"kbrules: {show(line)}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def write_json(value: Any, indent: Optional[int] = 2) -> None:
    write_text(json.dumps(value, indent=indent, ensure_ascii=not _utf8()))


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
        if not isinstance(result.report, Report) and result.error is None:
            raise TypeError("the text format needs a report of the Python engine")
        body = f"error: {result.error}" if result.error is not None else to_text(result.report)  # type: ignore[arg-type]
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


FORMATS: dict[str, type[Output]] = {"text": TextOutput, "json": JsonOutput, "jsonl": JsonlOutput}
