"""The output formats of kbrules check, in one table: how each input's result is
written to standard output. The CLI picks one by name and only calls add() and end().

Whatever stdout can encode, the report gets out: JSON falls back to \\u escapes and
text to backslash escapes when stdout is not UTF-8, so that exit 1 never means
"could not print". Names that are not valid UTF-8 (a path's bytes) are written as
\\xHH (text.fs_text), so the output is always valid UTF-8.

Whatever stdout does, the exit status holds: each piece (a JSONL line, a report) is
written and flushed whole; a write that fails is an OutputError (exit 2), and a
regular file is cut back to before that piece, so it never ends mid-line; a reader
that went away (| head) is ReaderGone, and kbrules stops quietly. With --output
FILE, what would go to stdout replaces FILE atomically at the end of the run
(to_file)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional, Union

from .draw import GLYPHS, Style, page_html, page_svg, script
from .errors import KbrulesError, OutputError, ReaderGone
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
    skipped: Optional[str] = None  # why this input (a domain's disk) is not checked
    reason: Optional[str] = None  # of the error or skip, in one word (KbrulesError.reason...)
    domain: Optional[str] = None  # the libvirt domain this input is (a disk of)

    @classmethod
    def failed(cls, source: str, error: KbrulesError, domain: Optional[str] = None) -> "Result":
        """An input that could not be checked."""
        return cls(source, 2, error=show(str(error)), reason=error.reason, domain=domain)

    def data(self) -> dict[str, Any]:
        """The JSON report."""
        assert self.report is not None
        return self.report if isinstance(self.report, dict) else to_dict(self.report)

    def entry(self) -> dict[str, Any]:
        """The JSON report with the input's name, or the input's name and its error,
        or why it was skipped. Names that are not UTF-8 are written as \\xHH."""
        if self.error is not None:
            return {"input": fs_text(self.source), "error": fs_text(self.error)}
        if self.skipped is not None:
            return {"input": fs_text(self.source), "skipped": self.skipped}
        return {"input": fs_text(self.source), **self.data()}


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


def _write(piece: str, data: Optional[bytes] = None) -> None:
    """Write one piece to stdout: `data` (its bytes, `piece` encoded for stdout when
    None) straight to stdout's file descriptor, all of it or an error (OutputError, or
    ReaderGone for a closed pipe); `piece` itself to a stdout that is no file (a
    StringIO, --output's buffer)."""
    out = sys.stdout
    if out is None:
        raise OutputError("cannot write the report: standard output is closed")
    try:
        fd = out.fileno()
    except (OSError, ValueError, AttributeError):  # not a file: no bytes to count
        out.write(piece)
        out.flush()
        return
    if data is None:
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


def write_text(text: str) -> None:
    """`text` and a newline, as one piece."""
    _write(fs_text(text) + "\n")


def write_markup(text: str) -> None:
    """HTML or SVG, as one piece: what stdout cannot encode becomes a character
    reference."""
    text = fs_text(text)
    _write(text, text.encode("utf-8") if _utf8() else text.encode("ascii", "xmlcharrefreplace"))


def write_bytes(data: bytes) -> None:
    """UTF-8 bytes as they are, whatever the locale's encoding, as one piece."""
    _write(data.decode("utf-8"), data)


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
        from . import __version__  # importlib.metadata: only where a page or metric names it

        return page_html(self.results, __version__)


class SvgOutput(_PageOutput):
    help = "the chain picture as one self-contained SVG image"

    def page(self) -> str:
        return page_svg(self.results)


class ScriptOutput(_PageOutput):
    help = "the repair plan as a POSIX shell script, to read and then run (what kbrules plan prints)"

    def page(self) -> str:
        from . import __version__

        return script(self.results, os.getcwd(), __version__)

    def end(self) -> None:
        write_text(self.page().rstrip("\n"))


class PrometheusOutput(Output):
    named = True  # every input is its own series, even when it is the only one
    help = ("Prometheus metrics (text exposition format) for node_exporter's textfile "
            "collector, with --output DIR/kbrules.prom (docs: monitoring)")

    def __init__(self, batch: bool) -> None:
        super().__init__(batch)
        self.results: list[Result] = []
        self.started = time.monotonic()

    def add(self, result: Result) -> None:
        self.results.append(result)

    def end(self) -> None:
        write_bytes(exposition(self.results, time.time(), time.monotonic() - self.started))


FORMATS: dict[str, type[Output]] = {"text": TextOutput, "json": JsonOutput, "jsonl": JsonlOutput,
                                    "html": HtmlOutput, "svg": SvgOutput, "script": ScriptOutput,
                                    "prometheus": PrometheusOutput}


# Prometheus metrics ------------------------------------------------------------------

METRICS = {  # name: (labels, help); every value is a gauge
    "kbrules_bitmap_valid": (
        ("domain", "disk", "bitmap"),
        "Whether an incremental backup can start from this bitmap (1) or not (0): no "
        "finding of severity error on it."),
    "kbrules_checkpoint_usable": (
        ("domain", "disk", "checkpoint"),
        "Whether an incremental backup of this disk can start from this libvirt checkpoint "
        "now (1) or not (0)."),
    "kbrules_checkpoint_newest_usable": (
        ("domain", "disk", "checkpoint"),
        "1 for the newest usable checkpoint of the disk, 0 for its other checkpoints."),
    "kbrules_findings": (
        ("domain", "disk", "bitmap", "checkpoint", "rule", "severity"),
        "Findings of a rule, on a bitmap, a checkpoint, or (both empty) the chain's layers."),
    "kbrules_input_error": (
        ("domain", "disk", "reason"),
        "1 for an input that could not be checked, with why in one word (the message is on "
        "stderr)."),
    "kbrules_input_skipped": (
        ("domain", "disk", "reason"),
        "1 for a domain's disk that is not checked (not a qcow2 disk...), with why in one word."),
    "kbrules_last_run_timestamp_seconds": (
        (), "When the kbrules run that wrote these metrics ended, in seconds since the epoch."),
    "kbrules_last_run_duration_seconds": (
        (), "How long the kbrules run that wrote these metrics took to check its inputs."),
}


def label(text: str) -> str:
    """A label value: any text as it is (the exposition format escapes quotes, backslashes
    and newlines); the bytes of a name that is not UTF-8 (a path from the command line)
    as \\xNN, since a label must be UTF-8."""
    try:
        return text.encode("utf-8").decode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no byte decoded to
            raw = text.encode("utf-8", "backslashreplace")
        return raw.decode("utf-8", "backslashreplace")


def where(result: Result) -> tuple[str, str]:
    """The (domain, disk) labels of an input: a domain's name and disk target, or no
    domain and the path or JSON file as given on the command line."""
    if result.report is not None:
        domain = result.data()["domain"]
        if domain is not None:
            return domain["name"], domain["disk"]
    if result.domain is not None:  # a disk that was skipped or failed, or the whole domain
        prefix = result.domain + "/"
        return result.domain, result.source[len(prefix):] if result.source.startswith(prefix) else ""
    return "", result.source


Samples = dict[str, dict[tuple[str, ...], float]]  # metric name -> label values -> value


def samples(results: list[Result], now: float, duration: float) -> Samples:
    """Each metric's samples: label values -> value. The same input named twice is
    counted once (a series must not repeat)."""
    out: Samples = {name: {} for name in METRICS}
    seen: set[tuple[str, str]] = set()
    for result in results:
        at = where(result)
        if at in seen:
            continue
        seen.add(at)
        if result.error is not None:
            out["kbrules_input_error"][(*at, result.reason or "other")] = 1
        elif result.skipped is not None:
            out["kbrules_input_skipped"][(*at, result.reason or "other")] = 1
        else:
            _report_samples(out, at, result.data())
    out["kbrules_last_run_timestamp_seconds"][()] = now
    out["kbrules_last_run_duration_seconds"][()] = duration
    return out


def _report_samples(out: Samples, at: tuple[str, str], data: dict[str, Any]) -> None:
    found = [(bitmap["name"], "", f) for bitmap in data["bitmaps"] for f in bitmap["findings"]]
    found += [("", point["name"], f) for point in data["checkpoints"] for f in point["findings"]]
    found += [("", "", f) for f in data["findings"]]
    for bitmap in data["bitmaps"]:
        out["kbrules_bitmap_valid"][(*at, bitmap["name"])] = int(bitmap["valid"])
    for point in data["checkpoints"]:
        out["kbrules_checkpoint_usable"][(*at, point["name"])] = int(point["usable"])
        out["kbrules_checkpoint_newest_usable"][(*at, point["name"])] = int(
            point["name"] == data["newest_usable_checkpoint"])
    findings = out["kbrules_findings"]
    for bitmap_name, point_name, f in found:
        key = (*at, bitmap_name, point_name, f["rule"], f["severity"])
        findings[key] = findings.get(key, 0) + 1


def exposition(results: list[Result], now: float, duration: float) -> bytes:
    """The metrics of a run in Prometheus' text exposition format, written by the
    official client library (imported here only: other formats do not pay for it)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric

    from . import __version__

    values = samples(results, now, duration)

    class Collector:
        def collect(self) -> Iterator[Metric]:
            yield InfoMetricFamily("kbrules_build", "The version of kbrules that wrote these metrics.",
                                   value={"version": __version__})
            for name, (labels, text) in METRICS.items():
                family = GaugeMetricFamily(name, text, labels=list(labels))
                for key, value in values[name].items():
                    family.add_metric([label(v) for v in key], value)
                yield family

    registry = CollectorRegistry()
    registry.register(Collector())  # a collector is any object with collect()
    return generate_latest(registry)


# --output FILE ----------------------------------------------------------------------

def check_writable(path: str) -> None:
    """Refuse, before any input is read, a FILE that --output could not replace."""
    directory = os.path.dirname(path) or "."
    if not path:
        raise OutputError("--output needs a file name")
    if os.path.isdir(path):
        raise OutputError(f"--output {path}: is a directory; give a file name in it")
    if not os.path.isdir(directory):
        raise OutputError(f"--output {path}: no such directory {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"--output {path}: cannot create files in {directory} (permission denied)")


def replace_file(path: str, data: bytes) -> None:
    """Write FILE as a whole or not at all: a temporary file in the same directory
    (never named *.prom, so node_exporter skips it), synced, then renamed over FILE.
    A reader sees the old content or the new one, never a part. The new file keeps the
    mode of the one it replaces; a new one gets 0666 less the umask, as with `>`."""
    directory = os.path.dirname(path) or "."
    import secrets  # only --output needs a name no one can guess

    temp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise OutputError(f"--output {path}: cannot create a file in {directory}: {e.strerror}") from None
    try:
        with open(fd, "wb") as file:
            with contextlib.suppress(FileNotFoundError):
                old = os.stat(path)
                if stat.S_ISREG(old.st_mode):
                    os.fchmod(file.fileno(), stat.S_IMODE(old.st_mode))
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.rename(temp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise OutputError(f"--output {path}: cannot write: {e.strerror or e}") from None
    with contextlib.suppress(OSError):  # the rename itself outlives a crash
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def to_file(path: Optional[str]) -> Iterator[None]:
    """With a path, what the run prints goes to that file instead, replacing it when
    the run ends without an exception; a run that stops on an error (exit 2, one line)
    leaves the file as it was. Without a path, stdout as usual."""
    if path is None:
        yield
        return
    check_writable(path)
    stdout = sys.stdout
    raw = io.BytesIO()
    captured = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
    sys.stdout = captured
    try:
        yield
        captured.flush()
        data = raw.getvalue()
    finally:
        sys.stdout = stdout
    replace_file(path, data)
