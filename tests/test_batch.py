"""Many chains per call, and the rules cache between runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.qemu import run_program
from helpers import kbrules, make_chain

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tops(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three real chains: valid, one disabled copy, one gap."""
    layouts = [[{"a": "ok"}, {"a": "ok"}], [{"a": "ok"}, {"a": "disabled"}], [{"a": "ok"}, {}, {"a": "ok"}]]
    return [make_chain(tmp_path_factory.mktemp(f"chain{i}"), layout)[0] for i, layout in enumerate(layouts)]


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_jsonl_one_report_per_input_in_order(tops: list[Path], jobs: str) -> None:
    run = kbrules("check", *map(str, tops), "--format", "jsonl", "--jobs", jobs)
    assert run.code == 1 and run.err == ""
    reports = [json.loads(line) for line in run.out.splitlines()]
    assert [r["input"] for r in reports] == list(map(str, tops))
    assert [r["bitmaps"][0]["valid"] for r in reports] == [True, False, False]
    # Each line is the single-input report plus its input.
    for top, report in zip(tops, reports):
        alone = kbrules("check", str(top), "--format", "json").json()
        assert report == {"input": str(top), **alone}


def test_json_is_an_array_and_text_groups_by_input(tops: list[Path]) -> None:
    as_json = kbrules("check", *map(str, tops), "--format", "json")
    assert [r["input"] for r in as_json.json()] == list(map(str, tops))
    text = kbrules("check", *map(str, tops))
    assert text.code == 1
    headers = [line for line in text.out.splitlines() if line.startswith("== ")]
    assert headers == [f"== {t} ==" for t in tops]
    assert text.out.count("1 bitmap checked: 1 valid") == 1


def test_exit_code_is_the_worst(tops: list[Path]) -> None:
    assert kbrules("check", str(tops[0]), str(tops[0])).code == 0
    assert kbrules("check", str(tops[0]), str(tops[1])).code == 1
    assert kbrules("check", str(tops[0]), str(tops[1]), "/nonexistent").code == 2


def test_engine_jq_in_batch(tops: list[Path]) -> None:
    by_jq = kbrules("check", *map(str, tops), "--format", "jsonl", "--engine", "jq")
    by_python = kbrules("check", *map(str, tops), "--format", "jsonl")
    assert by_jq.code == by_python.code == 1
    assert [json.loads(l) for l in by_jq.out.splitlines()] == [json.loads(l) for l in by_python.out.splitlines()]


def _run_fresh(cache: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """kbrules in a new process, with its own rules cache directory."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, "KBRULES_CACHE_DIR": str(cache)}, cwd=ROOT)


def test_rules_cache_is_written_once_and_follows_the_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rules_file = tmp_path / "mine.yaml"
    original = (ROOT / "rules" / "incremental-backup.yaml").read_text()
    rules_file.write_text(original)
    example = str(ROOT / "docs" / "examples" / "broken-chain.json")
    first = _run_fresh(cache, "check", example, "--rules", str(rules_file), "--format", "json")
    assert first.returncode == 1
    assert len(list(cache.glob("rules-*.json"))) == 1
    again = _run_fresh(cache, "check", example, "--rules", str(rules_file), "--format", "json")
    assert again.stdout == first.stdout and len(list(cache.glob("rules-*.json"))) == 1
    # A changed file is read again: a changed message shows, and so does a broken example.
    rules_file.write_text(original.replace("is not in the top image", "is missing from the top image"))
    changed = _run_fresh(cache, "check", example, "--rules", str(rules_file))
    assert "is missing from the top image" in changed.stdout
    rules_file.write_text(original.replace("flags: [in-use, auto]", "flags: [auto]"))
    broken = _run_fresh(cache, "check", example, "--rules", str(rules_file))
    assert broken.returncode == 2 and "rule bitmap-consistent: example #2 (fail)" in broken.stderr


def test_no_cache_when_disabled(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "engine.cli", "list"], capture_output=True, text=True,
                         env={**os.environ, "KBRULES_CACHE_DIR": "", "HOME": str(tmp_path),
                              "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert run.returncode == 0 and not (tmp_path / "xdg").exists()


def test_a_program_that_hangs_is_stopped_and_a_missing_one_named(tops: list[Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # How kbrules runs qemu-img and virsh: stopped at its timeout, and named when missing.
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_program(["sleep", "30"], 0.3)
    assert time.monotonic() - started < 10
    ran = run_program(["sh", "-c", "echo out; echo err >&2; exit 3"], 10)
    assert (ran.stdout, ran.stderr, ran.returncode) == (b"out\n", "err\n", 3)
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-img there
    run = kbrules("check", str(tops[0]))
    assert run.code == 2 and run.err.startswith("kbrules: qemu-img not found: install it"), run
