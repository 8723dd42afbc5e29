"""Shared test helpers: real images made with qemu-img, and kbrules run in-process."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

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
        paths.append(path)
        below = (path, real)
    return paths[::-1]


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
