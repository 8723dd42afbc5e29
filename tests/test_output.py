"""When the output fails, the exit status still holds: a closed or full stdout, or a
write error, is exit 2 with one line on stderr and never a traceback (exit 1 means a
bitmap is not valid, never "could not print"); a reader that goes away (| head) ends
kbrules quietly; JSONL lines are whole; every byte written is valid UTF-8. All through
the real console script, in real processes."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

import pytest

from builders import bitmap, layer
from helpers import KBRULES, make_chain

# A chain whose bitmap is not valid: a report, and exit 1 when it is printed.
BROKEN = json.dumps([layer("top.qcow2", [bitmap("a", "auto")], backing="base.qcow2"),
                     layer("base.qcow2", [bitmap("a")])])


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    """200 JSON inputs: about 300 KB of JSONL, more than a pipe holds."""
    paths = []
    for i in range(200):
        path = tmp_path / f"chain{i:03}.json"
        path.write_text(BROKEN)
        paths.append(str(path))
    return paths


def _shell(script: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """A shell line (for redirections), kbrules being the console script of this venv."""
    return subprocess.run(["bash", "-c", script], capture_output=True, timeout=120,
                          env={**os.environ, "KB": str(KBRULES), **env})


def _one_line(stderr: bytes, *needles: str) -> str:
    text = stderr.decode()
    assert "Traceback" not in text and text.count("\n") == 1 and text.startswith("kbrules: "), text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


@pytest.mark.parametrize("fmt", ["text", "json", "jsonl"])
@pytest.mark.parametrize("redirect, says", [
    (">&-", "standard output is closed"),
    ("> /dev/full", "cannot write the report to standard output: No space left on device"),
], ids=["closed", "full"])
def test_stdout_closed_or_full(fmt: str, redirect: str, says: str, tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(BROKEN)
    done = _shell(f'"$KB" check {tmp_path}/c.json --format {fmt} {redirect}')
    assert done.returncode == 2
    _one_line(done.stderr, says)


def test_help_to_a_full_stdout() -> None:
    done = _shell('"$KB" check --help > /dev/full')
    assert done.returncode == 2
    _one_line(done.stderr, "No space left on device")


def test_both_closed_is_still_exit_2(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(BROKEN)
    assert _shell(f'"$KB" check {tmp_path}/c.json > /dev/full 2>&-').returncode == 2
    assert _shell(f'"$KB" check {tmp_path}/c.json >&- 2>&-').returncode == 2


def _fsize(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_disk_that_fills_up_leaves_whole_lines(inputs: list[str], tmp_path: Path) -> None:
    """A file-size limit stands for a full disk (the same short write, then an error):
    the lines written are whole, the one cut is taken back, and the exit is 2."""
    out = tmp_path / "out.jsonl"
    with out.open("wb") as f:
        done = subprocess.run([str(KBRULES), "check", *inputs, "--format", "jsonl"], stdout=f,
                              stderr=subprocess.PIPE, preexec_fn=lambda: _fsize(50_000), timeout=120)
    assert done.returncode == 2
    _one_line(done.stderr, "cannot write the report to standard output: File too large")
    data = out.read_bytes()
    assert 0 < len(data) <= 50_000 and data.endswith(b"\n")
    lines = [json.loads(line) for line in data.splitlines()]
    assert [e["input"] for e in lines] == inputs[:len(lines)]


def test_appending_to_a_full_file_keeps_what_was_there(inputs: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"earlier": true}\n')
    with out.open("ab") as f:
        done = subprocess.run([str(KBRULES), "check", *inputs, "--format", "jsonl"], stdout=f,
                              stderr=subprocess.PIPE, preexec_fn=lambda: _fsize(50_000), timeout=120)
    assert done.returncode == 2
    data = out.read_bytes()
    assert data.startswith(b'{"earlier": true}\n') and data.endswith(b"\n")
    assert all(json.loads(line) for line in data.splitlines())


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_reader_goes_away(fmt: str, inputs: list[str]) -> None:
    """| head -1: kbrules stops quietly, status 141 as for any tool ended by SIGPIPE."""
    proc = subprocess.Popen([str(KBRULES), "check", *inputs, "--format", fmt],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and first and err == b""


def test_head_in_a_shell_pipeline(inputs: list[str]) -> None:
    done = subprocess.run(["bash", "-c", '"$0" check "$@" --format jsonl | head -1; echo "${PIPESTATUS[0]}"',
                           str(KBRULES), *inputs], capture_output=True, timeout=120)
    first, status = done.stdout.decode().splitlines()
    assert json.loads(first)["input"] == inputs[0] and status == "141" and done.stderr == b""


def test_exit_1_still_means_not_valid(inputs: list[str]) -> None:
    done = subprocess.run([str(KBRULES), "check", *inputs[:3], "--format", "jsonl"], capture_output=True)
    assert done.returncode == 1 and len(done.stdout.splitlines()) == 3


NAME = b"disk-\xff\xfe-\xe2\x82.qcow2"  # not UTF-8: two stray bytes and a cut sequence


def test_non_utf8_path_is_valid_utf8_in_json(tmp_path: Path) -> None:
    top = make_chain(tmp_path, [{"a": "ok"}])[0]
    odd = os.fsencode(tmp_path) + b"/" + NAME
    os.rename(top, odd)
    for fmt in ("jsonl", "json"):
        done = subprocess.run([os.fsencode(KBRULES), b"check", odd, odd, b"--format", fmt.encode()],
                              capture_output=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
        assert done.returncode == 0, done.stderr
        text = done.stdout.decode("utf-8")  # strict: raises on any byte that is not UTF-8
        entries = [json.loads(line) for line in text.splitlines()] if fmt == "jsonl" else json.loads(text)
        escaped = str(tmp_path) + "/disk-\\xff\\xfe-\\xe2\\x82.qcow2"
        assert [e["input"] for e in entries] == [escaped, escaped]
    text = subprocess.run([os.fsencode(KBRULES), b"check", odd, odd], capture_output=True).stdout
    assert f"== {escaped} ==".encode() in text and text.decode("utf-8")


def test_non_utf8_path_in_an_error(tmp_path: Path) -> None:
    missing = os.fsencode(tmp_path) + b"/" + NAME
    done = subprocess.run([os.fsencode(KBRULES), b"check", missing, b"--format", b"jsonl"], capture_output=True)
    assert done.returncode == 2
    entry = json.loads(done.stdout.decode("utf-8"))
    assert entry["error"].endswith("disk-\\xff\\xfe-\\xe2\\x82.qcow2: no such file")
    assert done.stderr.decode("utf-8").count("\n") == 1
