"""A batch under signals, in real processes of the console script: SIGINT and SIGTERM
stop it at once, kill every qemu-img with its process group, print the reports
already finished, and exit 130 or 143; a hung input times out, by name, and the batch
goes on.

A hung input: an image whose backing file is a FIFO no one writes to, checked with
--trust-backing (kbrules itself refuses FIFOs): qemu-img blocks opening it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import forge
from helpers import KBRULES, fifo, processes_with

GOOD = json.dumps([{"filename": "a.qcow2", "format": "qcow2", "virtual-size": 1}])


@pytest.fixture
def batch(tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    """Inputs: two JSON files that check at once, two images that hang, one more JSON
    file (never reached with --jobs 2). And the directory, to find qemu-img by."""
    with fifo(tmp_path / "never") as hang:
        good = []
        for name in ("good1.json", "good2.json", "good3.json"):
            (tmp_path / name).write_text(GOOD)
            good.append(str(tmp_path / name))
        hung = [str(forge.qcow2(tmp_path / f"hung{i}.qcow2", str(hang), "raw")) for i in (1, 2)]
        yield [good[0], good[1], hung[0], hung[1], good[2]], tmp_path


def _qemu_imgs(directory: Path) -> list[int]:
    return processes_with("qemu-img", str(directory))


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(KBRULES), "check", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(what: str, test: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not test():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_signal_stops_a_batch(signum: int, code: int, fmt: str, batch: tuple[list[str], Path]) -> None:
    inputs, directory = batch
    proc = _start([*inputs, "--trust-backing", "--jobs", "2", "--format", fmt, "--timeout", "600"])
    try:
        _wait_for("both hung qemu-img running", lambda: len(_qemu_imgs(directory)) == 2)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)  # a hang guard: it ends in well under 1 s
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == code, err
    reports = [json.loads(line) for line in out.splitlines()] if fmt == "jsonl" else json.loads(out)
    assert [r["input"] for r in reports] == inputs[:2]  # finished, in order; nothing else
    line = err.decode()
    assert line.count("\n") == 1 and "Traceback" not in line
    assert f"interrupted by {signal.Signals(signum).name}: 2 of 5 inputs checked" in line
    _wait_for("no qemu-img left", lambda: _qemu_imgs(directory) == [], seconds=5)


def test_signal_stops_a_single_input(batch: tuple[list[str], Path]) -> None:
    inputs, directory = batch
    proc = _start([inputs[2], "--trust-backing"])
    try:
        _wait_for("the hung qemu-img running", lambda: len(_qemu_imgs(directory)) == 1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143 and out == b"" and b"Traceback" not in err
    _wait_for("no qemu-img left", lambda: _qemu_imgs(directory) == [], seconds=5)


def test_a_hung_input_times_out_and_the_batch_goes_on(batch: tuple[list[str], Path]) -> None:
    inputs, directory = batch
    done = subprocess.run([str(KBRULES), "check", *inputs, "--trust-backing", "--timeout", "0.5",
                           "--format", "jsonl"], capture_output=True, timeout=60)
    assert done.returncode == 2
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["input"] for e in entries] == inputs
    for entry, source in zip(entries[2:4], inputs[2:4]):
        assert entry["error"] == f"{source}: qemu-img did not finish within 0.5 s and was stopped " \
                                 "(a hung file system, or a backing file that never answers)"
    assert all("chain" in e for e in entries[:2] + entries[4:])
    assert done.stderr.decode().count("\n") == 2  # one line per bad input
    assert _qemu_imgs(directory) == []

