"""Shared test helpers: real images made with qemu-img, and kbrules run in-process."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from engine import inspect, qemu
from engine.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# libvirt's own conformance data, vendored (tests/fixtures/libvirt/README.md says from
# where, and under which licence); PEERS is the shared copy beside the repository,
# which tests/test_libvirt.py compares it with when it is there.
LIBVIRT = FIXTURES / "libvirt"
PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers" / "libvirt"


def qemu_img(*args: str, cwd: Path) -> str:
    done = subprocess.run(["qemu-img", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"qemu-img {' '.join(args)}: {done.stderr}"
    return done.stdout


def make_chain(directory: Path, layers: Sequence[Mapping[str, str]],
               formats: Optional[Sequence[str]] = None, data: bool = False) -> list[Path]:
    """Real images, base first in `layers` order reversed: layers[0] is the TOP.

    Each layer maps bitmap name -> state: "ok" (recording), "disabled", "in-use"
    (left by a writer killed mid-write: qemu-io ... -c abort), or "disabled-in-use"
    (a disabled bitmap that such a writer loaded: both flags wrong). `formats` gives each
    layer's format (default qcow2): "qcow2", "qcow2-v2" (compat 0.10) or "raw"; a layer
    that cannot hold bitmaps must have none. With `data`, each layer gets guest data of
    its own (a pattern at an offset of its own) before its bitmaps. Returns the paths,
    top first.
    """
    formats = formats or ["qcow2"] * len(layers)
    paths: list[Path] = []
    below: Optional[tuple[Path, str]] = None
    for depth in range(len(layers) - 1, -1, -1):
        fmt = formats[depth]
        real = "raw" if fmt == "raw" else "qcow2"
        path = directory / f"layer{depth}.{'img' if real == 'raw' else 'qcow2'}"
        args = ["create", "-q", "-f", real]
        if fmt == "qcow2-v2":
            args += ["-o", "compat=0.10"]
        if below is not None:
            args += ["-b", below[0].name, "-F", below[1]]
        qemu_img(*args, str(path.name), "1M", cwd=directory)
        if data:
            write = f"write -P {depth + 1} {depth * 65536} 4k"
            done = subprocess.run(["qemu-io", "-f", real, "-c", write, path.name], cwd=directory,
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        bitmaps = layers[depth]
        # "--" ends the options: a bitmap name may start with "-".
        # In-use first: the killed writer marks every bitmap it loaded in-use.
        broken = [n for n, s in bitmaps.items() if s in ("in-use", "disabled-in-use")]
        for name in broken:
            disable = ["--disable"] if bitmaps[name] == "disabled-in-use" else []
            qemu_img("bitmap", "--add", *disable, "--", path.name, name, cwd=directory)
        if broken:
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 0 64k", "-c", "abort", path.name],
                           cwd=directory, capture_output=True)
        for name, state in bitmaps.items():
            if state == "ok":
                qemu_img("bitmap", "--add", "--", path.name, name, cwd=directory)
            elif state == "disabled":
                qemu_img("bitmap", "--add", "--disable", "--", path.name, name, cwd=directory)
            else:
                assert state in ("in-use", "disabled-in-use"), state
        paths.append(agrees_with_qemu(path))
        below = (path, real)
    return paths[::-1]


def agrees_with_qemu(path: Path) -> Path:
    """`path`, once kbrules' own reading of its header (engine/inspect.py) is found to
    be qemu-img's: the probed format and, for qcow2, the backing file and its format,
    the data file, the version, the feature flags qemu-img shows, the counts of bitmaps
    and snapshots. qemu-img runs contained (limits, no network) and opens this one
    image only (info without --backing-chain never opens a backing file)."""
    ran = qemu.run(["qemu-img", "info", "--output=json", "-U", str(path)], str(path))
    assert ran.returncode == 0, ran.stderr
    info = json.loads(ran.stdout)
    head = path.read_bytes()[:4096]
    assert info["format"] == inspect.probe(head, str(path)), (path, info["format"])
    if info["format"] != "qcow2":
        return path
    header = inspect.parse_qcow2(path.read_bytes()[:inspect.qcow2_size(head)])
    data = info["format-specific"]["data"]
    found = {
        "backing": header.backing.decode("utf-8", "replace") if header.backing else None,
        "backing format": header.backing_format,
        "data file": header.data_file.decode("utf-8", "replace") if header.data_file else None,
        "compat": {2: "0.10", 3: "1.1"}[header.version],
        "bitmaps": header.bitmaps,
        "snapshots": header.snapshots,
    }
    said = {
        "backing": info.get("backing-filename"),
        "backing format": info.get("backing-filename-format"),
        "data file": data.get("data-file"),
        "compat": data["compat"],
        "bitmaps": len(data.get("bitmaps", [])),
        "snapshots": len(info.get("snapshots", [])),
    }
    # Feature flags, where this qemu-img shows them (versions differ for v2 images).
    for key, bits, mask in (("lazy-refcounts", header.compatible, 1), ("corrupt", header.incompatible, 2),
                            ("extended-l2", header.incompatible, 16)):
        if key in data:
            found[key], said[key] = bool(bits & mask), data[key]
    assert found == said, (path, found, said)
    return path


def info_text(top: Path, backing_chain: bool = True) -> str:
    """qemu-img info --output=json [--backing-chain] of a top image, as printed."""
    chain = ["--backing-chain"] if backing_chain else []
    return qemu_img("info", "--output=json", *chain, top.name, cwd=top.parent)


def info_json(top: Path, backing_chain: bool = True) -> Any:
    """qemu-img info --output=json [--backing-chain] of a top image, parsed."""
    return json.loads(info_text(top, backing_chain))


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def kbrules(*args: str, stdin: bytes = b"") -> Run:
    """kbrules in this process, as the console script would run it."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        sys.stdin = old
    return Run(code, out.getvalue(), err.getvalue())


def assert_one_line_error(run: Run, *needles: str) -> str:
    """Exit 2, exactly one non-empty line on stderr holding every needle, stdout empty,
    no traceback: what every bad input and bad command line must give. The line."""
    assert run.code == 2, (run.code, run.out, run.err)
    assert run.out == "", f"a report or help on stdout with exit 2: {run.out[:300]!r}"
    assert "Traceback" not in run.err
    assert run.err.endswith("\n") and run.err.count("\n") == 1 and "\r" not in run.err, \
        f"not exactly one line on stderr: {run.err!r}"
    line = run.err.strip()
    assert line.startswith("kbrules: ") and len(line) > len("kbrules: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def verdicts(run: Run) -> dict[str, tuple[bool, list[tuple[str, int]]]]:
    """name -> (valid, [(rule, layer), ...]) from a JSON report."""
    return {b["name"]: (b["valid"], [(f["rule"], f["layer"]) for f in b["findings"]])
            for b in run.json()["bitmaps"]}


class Listener:
    """A TCP listener on 127.0.0.1 that accepts connections, counts them and never
    answers (a stand-in for an nbd, http, ssh... server an image names). A context
    manager: closed, with every connection, at the end of the block."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.05)  # accept() wakes up to see the end of the block
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:  # a timeout: look again
                continue
            self.accepted.append(conn)

    def __enter__(self) -> "Listener":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self.server.close()
        for conn in self.accepted:
            conn.close()


KBRULES = Path(sys.executable).parent / "kbrules"  # the console script of this venv


def processes_with(*needles: str) -> list[int]:
    """PIDs of live processes whose command line holds every needle (such as a test's
    own temporary directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                cmdline = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
                if all(n.encode() in cmdline for n in needles) and stat.split(") ", 1)[1][:1] != "Z":
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def fifo(path: Path) -> Iterator[Path]:
    """A FIFO no one writes to: opening it for reading blocks forever."""
    import os

    os.mkfifo(path)
    try:
        yield path
    finally:
        path.unlink()
