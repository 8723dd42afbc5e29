"""The articles' examples run as tests: every ``docs/kbase/*.rst`` is collected by Sybil,
and so are ``docs/contributing.rst``, whose worked example is a session like theirs,
and ``docs/monitoring.rst`` and ``docs/jq.rst`` (``PAGES`` below; "article" in what
follows means any of these pages).

Run one article alone with ``python3 -m pytest docs/kbase/incremental-backup.rst``; the
plain ``python3 -m pytest -q`` runs them too (``testpaths`` in pyproject.toml).

Console sessions (``.. code-block:: console``)
    A line starting with ``$ `` is a command; the lines right after it that start with
    ``> `` continue it (bash's second prompt: heredocs, long pipelines). The lines after
    those, up to the next ``$ `` or the end of the block, are what the command prints,
    standard output and standard error together, as a terminal shows them. Each command
    is one test, named by its line.

    - Every article runs in a fresh, empty temporary directory, the working directory of
      every command; it is removed when the article is done, pass or fail, after stopping
      any process that the article left running there (a ``*.pid`` file in it naming a
      process that holds a file of the directory open). kbrules' rules cache
      (``KBRULES_CACHE_DIR``) is kept beside it and removed with it.
    - Each command runs on its own, as ``bash -c COMMAND``: ``cd`` and shell variables do
      not carry over to the next one. Standard input is empty.
    - A command must exit 0. When the article shows a failure, the command says so
      itself, as a reader would see it: ``kbrules check top.qcow2; echo "exit $?"``.
    - Output that starts with JSON (``{``, ``[`` or ``"``) is read as a stream of JSON
      values, compared as values (key order and layout do not matter); any text after
      them, and output that is not JSON, is compared exactly, except for spaces at line
      ends and blank lines at the start and end.
    - Two placeholders may stand in the expected output, and nothing else varies:
      ``<tmp>`` is the article's directory (its real path in the output is replaced by
      ``<tmp>`` before comparing); ``<size>`` is a size that depends on the file system:
      in text a number with an optional unit (``204 KiB``), in JSON a bare ``<size>``
      where a number stands.
    - A command that runs ``virsh`` gets a real libvirtd: the harness starts one when
      none answers (tests/libvirtd.py) and stops it at the end of the run; the
      article's directory can be read by the libvirt-qemu user, and every domain with
      a disk in it is destroyed and undefined when the article is done. Without
      libvirt installed such a command is skipped (in CI, where CI is set, it fails).
    - Environment: ``KBRULES_RULES`` is the rules directory of the kbrules under test (in
      a source tree, its ``rules/``); ``KBRULES_MONITORING`` is ``docs/monitoring/``; ``LC_ALL=C.UTF-8``, ``COLUMNS=80``; no core dumps;
      the scripts directory of this Python comes first in ``PATH``, so ``kbrules`` is the
      one under test.

Python sessions (``>>>`` lines, e.g. in ``.. code-block:: pycon``)
    Doctests, run in the same directory (as the working directory), in one namespace per
    article.

Other code blocks (``sh``, ``json``, ``text``...) are shown, not run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from difflib import unified_diff
from pathlib import Path
from typing import Any, Optional

import pytest
from sybil import Document, Example, Region, Sybil
from sybil.parsers.rest import DocTestParser

from engine.loader import rules_dir


def _libvirtd() -> Any:
    """The tests' libvirt daemon manager (tests/libvirtd.py), imported when an article
    first runs virsh: one libvirtd for the whole test run."""
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import libvirtd

    return libvirtd

DIR_KEY = "_kbrules_article_dir"  # where the article's temp dir sits in its namespace
TIMEOUT = 60  # seconds for one command
SIZE = "<size>"
TMP = "<tmp>"
JSON_SIZE = "\x00<size>"  # what a bare <size> in expected JSON becomes: no real string is that

CODE_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block::[ \t]*console[ \t]*\n", re.M)


@dataclass(frozen=True)
class Command:
    script: str  # what bash runs
    expected: str  # what it must print


def _block_lines(text: str, start: int, indent: int) -> Iterator[tuple[int, str]]:
    """(position, line) of a directive's body: its options, then its content, up to the
    first non-blank line indented no deeper than the directive."""
    pos = start
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end + 1
        line = text[pos:end].rstrip("\n")
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            return
        yield pos, line
        pos = end


def parse_console(document: Document) -> Iterable[Region]:
    """One region per command of every console block."""
    for block in CODE_BLOCK.finditer(document.text):
        content = list(_block_lines(document.text, block.end(), len(block["indent"])))
        while content and content[0][1].strip().startswith(":"):  # the directive's options
            content.pop(0)
        body = [(p, l) for p, l in content if l.strip()]
        if not body:
            continue
        cut = min(len(l) - len(l.lstrip()) for _, l in body)
        content = [(p, l[cut:]) for p, l in content]
        while content and not content[0][1].strip():
            content.pop(0)
        if not content[0][1].startswith("$ "):
            where = document.line_column(content[0][0])
            raise ValueError(f"{document.path}, {where}: a console block must start with a "
                             f"'$ ' command line")
        starts = [i for i, (_, l) in enumerate(content) if l.startswith("$ ")] + [len(content)]
        for first, after in zip(starts, starts[1:]):
            chunk = content[first:after]
            script = [chunk[0][1][2:]]
            rest = chunk[1:]
            while rest and (rest[0][1].startswith("> ") or rest[0][1] == ">"):
                script.append(rest.pop(0)[1][2:])
            while rest and not rest[-1][1].strip():
                rest.pop()
            end = rest[-1][0] + len(rest[-1][1]) + cut if rest else chunk[0][0] + cut + len(chunk[0][1])
            yield Region(chunk[0][0], end, Command("\n".join(script), "\n".join(l for _, l in rest)),
                         run_command)


def _environment(where: Path) -> dict[str, str]:
    scripts = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    path = os.pathsep.join([*dict.fromkeys(scripts), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "LC_ALL": "C.UTF-8", "COLUMNS": "80",
            "KBRULES_RULES": str(rules_dir()), "KBRULES_CACHE_DIR": str(where.parent / "cache"),
            "KBRULES_MONITORING": str(Path(__file__).resolve().parent / "monitoring")}


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_command(example: Example) -> Optional[str]:
    command: Command = example.parsed
    where: Path = example.namespace[DIR_KEY]
    if re.search(r"\bvirsh\b", command.script):
        libvirtd = _libvirtd()
        why = libvirtd.missing()
        if why:
            if os.environ.get("CI"):
                return f"$ {command.script}\nCI must run the libvirt examples: {why}"
            pytest.skip(why)
        libvirtd.DAEMONS.ensure()
        if LOCK_KEY not in example.namespace:
            example.namespace[LOCK_KEY] = _hold_libvirt_lock()
    try:
        done = subprocess.run(["bash", "-c", command.script], cwd=where, env=_environment(where),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=TIMEOUT, preexec_fn=_no_core_dumps)
    except subprocess.TimeoutExpired:
        return f"$ {command.script}\nno answer after {TIMEOUT} s"
    out = done.stdout.decode("utf-8", "replace")
    for path in {str(where.resolve()), str(where)}:
        out = out.replace(path, TMP)
    if done.returncode != 0:
        return (f"$ {command.script}\nexited {done.returncode}: an article shows a failure with "
                f"'; echo \"exit $?\"' after the command. It printed:\n{out}")
    problem = compare(command.expected, out)
    return f"$ {command.script}\n{problem}\n--- what it printed:\n{out}" if problem else None


# Comparing outputs -------------------------------------------------------------------

_BARE_SIZE = re.compile(r"(?<=[:\[,\s])<size>(?=[\s,\]}])")


def split_json(text: str, expected: bool = False) -> tuple[list[Any], str]:
    """The JSON values a text starts with, and the text after them."""
    if expected:
        text = _BARE_SIZE.sub(lambda _: json.dumps(JSON_SIZE), text)
    decoder, values, pos = json.JSONDecoder(), [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text) or text[pos] not in '{["':
            return values, _text_after(text[pos:], expected)
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return values, _text_after(text[pos:], expected)
        values.append(value)


def _text_after(rest: str, expected: bool) -> str:
    """The text after the JSON values: a <size> in it that was taken for JSON (one
    followed by more text) becomes the text placeholder again."""
    return rest.replace(json.dumps(JSON_SIZE), SIZE) if expected else rest


def json_match(expected: Any, actual: Any) -> bool:
    if expected == JSON_SIZE:
        return isinstance(actual, (int, float)) and not isinstance(actual, bool)
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and expected.keys() == actual.keys()
                and all(json_match(v, actual[k]) for k, v in expected.items()))
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(expected) == len(actual)
                and all(json_match(e, a) for e, a in zip(expected, actual)))
    return type(expected) is type(actual) and expected == actual or (
        type(expected) in (int, float) and type(actual) in (int, float) and expected == actual)


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


_SIZE_TEXT = r"[0-9]+(?:\.[0-9]+)?(?: ?(?:[KMGTPE]i?)?B)?"


def text_match(expected: str, actual: str) -> bool:
    want, got = _lines(expected), _lines(actual)
    if len(want) != len(got):
        return False
    for w, g in zip(want, got):
        if SIZE in w:
            pattern = _SIZE_TEXT.join(re.escape(part) for part in w.split(SIZE))
            if not re.fullmatch(pattern, g):
                return False
        elif w != g:
            return False
    return True


def _shown(values: list[Any], rest: str) -> list[str]:
    """A canonical text of an output, for diffs."""
    shown = [json.dumps(v, indent=2, sort_keys=True).replace(json.dumps(JSON_SIZE), SIZE)
             for v in values]
    return "\n".join([*shown, *_lines(rest)]).splitlines()


def compare(expected: str, actual: str) -> Optional[str]:
    """None when `actual` is what `expected` shows, else a diff."""
    want_values, want_rest = split_json(expected, expected=True)
    got_values, got_rest = split_json(actual)
    if (len(want_values) == len(got_values)
            and all(json_match(w, g) for w, g in zip(want_values, got_values))
            and text_match(want_rest, got_rest)):
        return None
    diff = unified_diff(_shown(want_values, want_rest), _shown(got_values, got_rest),
                        "expected (as the article shows it)", "printed", lineterm="")
    return "output differs (JSON shown sorted and indented):\n" + "\n".join(diff)


# Python examples ------------------------------------------------------------------------

class InArticleDir:
    """Runs a doctest evaluator with the article's directory as the working directory."""

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator

    def __call__(self, example: Example) -> Optional[str]:
        with _chdir(example.namespace[DIR_KEY]):
            return self.evaluator(example)


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class PythonSessions:
    def __init__(self) -> None:
        self.doctests = DocTestParser()

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in self.doctests(document):
            region.evaluator = InArticleDir(region.evaluator)
            yield region


# One directory per article ---------------------------------------------------------------

def setup(namespace: dict[str, Any]) -> None:
    root = Path(tempfile.mkdtemp(prefix="kbrules-article-"))
    (root / "work").mkdir()
    for directory in (root, root / "work"):
        directory.chmod(0o755)  # qemu runs as libvirt-qemu in the libvirt examples
    namespace[DIR_KEY] = root / "work"


def teardown(namespace: dict[str, Any]) -> None:
    root = namespace.pop(DIR_KEY).parent
    stop_leftovers(root / "work")
    remove_domains(root / "work")
    lock = namespace.pop(LOCK_KEY, None)
    if lock is not None:
        lock.close()  # releases it
    shutil.rmtree(root)  # does not follow symbolic links out of it


LOCK_KEY = "_kbrules_libvirt_lock"
LOCK = Path("/run/lock/kbrules-libvirt-articles.lock")


def _hold_libvirt_lock() -> Any:
    """An article's domains have fixed names (the reader sees them): two test runs on
    one host take turns, each holding this lock from its first virsh command to the
    article's end."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    handle = LOCK.open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def remove_domains(where: Path) -> None:
    """Destroy and undefine every libvirt domain with a disk in the article's directory."""
    libvirtd = sys.modules.get("libvirtd")  # only when the article ran virsh
    if libvirtd is None or libvirtd.missing() or not libvirtd.DAEMONS.answering():
        return
    for name in libvirtd.virsh("list", "--all", "--name").stdout.split():
        disks = libvirtd.virsh("domblklist", "--details", name, check=False).stdout
        if str(where) in disks:
            libvirtd.virsh("destroy", name, check=False)
            libvirtd.virsh("undefine", "--checkpoints-metadata", "--snapshots-metadata", name, check=False)


def _holds(pid: int, where: Path) -> bool:
    """Whether process `pid` has a file of `where` open."""
    root = str(where.resolve()) + os.sep
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(root):
                return True
    return False


def stop_leftovers(where: Path) -> None:
    """Stop the servers an article started and left running (their pid files are in its
    directory): SIGTERM, then SIGKILL after 5 s."""
    for pidfile in where.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().split()[0])
            if not _holds(pid, where):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _holds(pid, where) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _holds(pid, where):
                os.kill(pid, signal.SIGKILL)


# The pages whose sessions run, relative to docs/.
PAGES = ["kbase/*.rst", "contributing.rst", "monitoring.rst", "jq.rst"]

pytest_collect_file = Sybil(
    parsers=[parse_console, PythonSessions()],
    patterns=PAGES,
    setup=setup,
    teardown=teardown,
).pytest()


def pytest_sessionfinish() -> None:
    """Stop the libvirt daemons that the articles started, if any."""
    libvirtd = sys.modules.get("libvirtd")
    if libvirtd is not None:
        libvirtd.DAEMONS.stop()
