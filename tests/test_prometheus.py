"""kbrules check --format prometheus and --output FILE, on real images: the metrics say
what the JSON report says, hostile names survive as labels, inputs that were not
checked are counted with a reason word, and --output replaces its file atomically.
(A real node_exporter and Prometheus scrape them in test_monitoring.py.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.draw import GLYPHS

import engine
from engine import libvirt
from engine.errors import InputError, ToolTimeout
from engine.formats import Result, exposition, label, replace_file
from engine.model import Domain
from helpers import assert_one_line_error, kbrules, make_chain
from metrics import HOSTILE_BITMAPS, RUN, expected, parse, path_label, promtool_missing, series, without_run


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A healthy chain, a broken one (disabled in the middle, in use at the base), and an
    image whose bitmaps and path have hostile names."""
    root = tmp_path_factory.mktemp("prom")
    made = {}
    for name, layers in {
        "healthy": [{"daily": "ok", "weekly": "ok"}, {"daily": "ok", "weekly": "ok"}],
        "broken": [{"daily": "ok", "weekly": "ok"}, {"daily": "disabled", "weekly": "ok"},
                   {"daily": "in-use"}],
    }.items():
        (root / name).mkdir()
        made[name] = make_chain(root / name, layers)[0]
    return made


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    # A path with a quote, a backslash, a newline and a byte that is not UTF-8.
    directory = Path(os.fsdecode(bytes(root) + b'/we"ird\\dir\n\xff'))
    directory.mkdir()
    return make_chain(directory, [{n: "ok" for n in HOSTILE_BITMAPS}])[0]


def jsonl(*args: str) -> list[dict]:
    run = kbrules("check", "--format", "jsonl", *args)
    assert run.code in (0, 1, 2), run
    return [json.loads(line) for line in run.out.splitlines()]


def test_metrics_say_what_the_json_report_says(chains: dict[str, Path], tmp_path: Path) -> None:
    paths = [str(chains["healthy"]), str(chains["broken"]), str(tmp_path / "missing.qcow2")]
    run = kbrules("check", "--format", "prometheus", *paths)
    assert run.code == 2 and run.err == f"kbrules: {paths[2]}: no such file\n", run
    found = parse(run.out)
    want = expected(jsonl(*paths), {paths[2]: ("", paths[2], "input")})
    assert without_run(found) == want
    # Not just the same as whatever the report holds: the chains' verdicts are known.
    assert found[series("kbrules_bitmap_valid", disk=paths[0], bitmap="daily")] == 1
    assert found[series("kbrules_bitmap_valid", disk=paths[1], bitmap="daily")] == 0
    assert found[series("kbrules_bitmap_valid", disk=paths[1], bitmap="weekly")] == 1
    assert found[series("kbrules_findings", disk=paths[1], bitmap="daily", rule="bitmap-consistent",
                        severity="error")] == 1
    assert found[series("kbrules_input_error", disk=paths[2], reason="input")] == 1
    assert {k[0] for k in found} >= set(RUN)
    assert 0 < found[series("kbrules_last_run_duration_seconds")] < 60


def test_one_input_is_a_series_too(chains: dict[str, Path], tmp_path: Path) -> None:
    # One input: an error is a series like any other, not the one-line error of exit 2
    # without a report; the line is on stderr all the same.
    missing = str(tmp_path / "gone.qcow2")
    run = kbrules("check", "--format", "prometheus", missing)
    assert run.code == 2 and run.err == f"kbrules: {missing}: no such file\n"
    assert parse(run.out)[series("kbrules_input_error", disk=missing, reason="input")] == 1
    one = kbrules("check", "--format", "prometheus", str(chains["broken"]))
    assert one.code == 1 and without_run(parse(one.out)) == expected(jsonl(str(chains["broken"])))


def test_jq_engine_gives_the_same_metrics(chains: dict[str, Path]) -> None:
    paths = [str(chains["healthy"]), str(chains["broken"])]
    python = kbrules("check", "--format", "prometheus", *paths)
    jq = kbrules("check", "--format", "prometheus", "--engine", "jq", *paths)
    assert (jq.code, without_run(parse(jq.out))) == (python.code, without_run(parse(python.out)))


def test_an_input_named_twice_is_one_series(chains: dict[str, Path]) -> None:
    path = str(chains["broken"])
    run = kbrules("check", "--format", "prometheus", path, path)  # parse() refuses a repeat
    assert without_run(parse(run.out)) == expected(jsonl(path))


def test_hostile_names_come_back_as_they_are(hostile: Path) -> None:
    run = kbrules("check", "--format", "prometheus", str(hostile))
    assert run.code == 0, run
    found = without_run(parse(run.out))
    # The path's byte 0xff is not UTF-8, which a label must be: it reads \xff.
    disk = path_label(str(hostile))
    assert "\\xff" in disk and "\n" in disk and '"' in disk
    assert found == {series("kbrules_bitmap_valid", disk=disk, bitmap=name): 1 for name in HOSTILE_BITMAPS}
    assert len("x" * 1023) == 1023 and "x" * 1023 in {dict(k[1])["bitmap"] for k in found}


def test_label_keeps_text_and_escapes_only_bytes_that_are_not_utf8() -> None:
    assert label('a"b\\c\nd') == 'a"b\\c\nd'  # the exposition format escapes these itself
    assert label(os.fsdecode(b"a\xffb")) == "a\\xffb"
    assert label("lone \ud800 surrogate") == "lone \\ud800 surrogate"


def test_promtool_finds_nothing_to_say(chains: dict[str, Path], hostile: Path) -> None:
    why = promtool_missing()
    if why:
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    run = kbrules("check", "--format", "prometheus", str(chains["healthy"]), str(chains["broken"]),
                  str(hostile))
    lint = subprocess.run(["promtool", "check", "metrics"], input=run.out.encode(), capture_output=True)
    # Exit 0 and no remark: names, units, types and help as Prometheus wants them.
    assert (lint.returncode, lint.stdout, lint.stderr) == (0, b"", b""), lint


def test_domain_disks_errors_and_skips_are_labelled_with_domain_disk_and_reason() -> None:
    results = [
        Result("vm1/vdb", 0, skipped="a raw image: only qcow2 holds bitmaps", reason="not_qcow2", domain="vm1"),
        Result.failed("vm1/vdc", ToolTimeout("virsh: no answer"), domain="vm1"),
        Result.failed("vm2", InputError("vm2: no disk 'vdz'"), domain="vm2"),
        Result.failed("/images/a.qcow2", InputError("held")),
    ]
    found = parse(exposition(results, 1700000000.0, 1.5).decode())
    assert without_run(found) == {
        series("kbrules_input_skipped", domain="vm1", disk="vdb", reason="not_qcow2"): 1,
        series("kbrules_input_error", domain="vm1", disk="vdc", reason="timeout"): 1,
        series("kbrules_input_error", domain="vm2", reason="input"): 1,
        series("kbrules_input_error", disk="/images/a.qcow2", reason="input"): 1,
    }
    assert found[series("kbrules_last_run_timestamp_seconds")] == 1700000000.0
    assert found[series("kbrules_last_run_duration_seconds")] == 1.5
    assert found[series("kbrules_build_info", version=engine.__version__)] == 1


@pytest.mark.parametrize("disk, reason", [
    (libvirt.Disk("hdc", "cdrom", "file", "raw", "/iso/x.iso", ()), "not_a_disk"),
    (libvirt.Disk("vdb", "disk", "file", "raw", "/img/data.raw", ()), "not_qcow2"),
    (libvirt.Disk("vdc", "disk", "network", "qcow2", None, ()), "needs_running_domain"),
], ids=["cdrom", "raw", "network-offline"])
def test_every_skip_has_a_reason_word(disk: libvirt.Disk, reason: str) -> None:
    domain = Domain("vm1", disk.target, False, (disk.target,), ())
    read = libvirt._read_disk(disk, f"vm1/{disk.target}", domain, None)
    assert read.skipped and read.reason == reason and reason in libvirt.SKIP_REASONS
    live = libvirt._read_disk(libvirt.Disk("vdd", "disk", "file", "qcow2", "/img/d.qcow2", ()),
                              "vm1/vdd", Domain("vm1", "vdd", True, ("vdd",), ()), [])
    assert live.reason == "no_node_index" and live.reason in libvirt.SKIP_REASONS


# --output FILE ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["text", "json", "jsonl", "prometheus"])
def test_output_file_holds_what_stdout_would(fmt: str, chains: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "out"
    to_stdout = kbrules("check", "--format", fmt, str(chains["broken"]))
    to_file = kbrules("check", "--format", fmt, "--output", str(target), str(chains["broken"]))
    assert to_file.code == to_stdout.code == 1 and to_file.out == "" and to_file.err == ""
    written = target.read_bytes().decode("utf-8")  # as it is: a CR in a label stays one
    if fmt == "prometheus":
        assert without_run(parse(written)) == without_run(parse(to_stdout.out))
    elif fmt == "text":
        # A UTF-8 file gets the Unicode marks; the tests' stdout has no encoding: ASCII.
        ascii_marks = {ord(GLYPHS[True][k]): GLYPHS[False][k] for k in GLYPHS[True]}
        assert written.translate(ascii_marks) == to_stdout.out
        assert written != to_stdout.out  # the file really got Unicode
    else:
        assert written == to_stdout.out
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary file left


def test_output_mode_follows_umask_or_the_file_it_replaces(chains: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "kbrules.prom"
    old = os.umask(0o027)
    try:
        kbrules("check", "--format", "prometheus", "-o", str(target), str(chains["healthy"]))
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        target.chmod(0o604)
        kbrules("check", "--format", "prometheus", "-o", str(target), str(chains["healthy"]))
        assert stat.S_IMODE(target.stat().st_mode) == 0o604
    finally:
        os.umask(old)


def test_a_run_that_stops_on_an_error_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("before\n")
    run = kbrules("check", "--format", "json", "--output", str(target), str(tmp_path / "missing.qcow2"))
    assert_one_line_error(run, "no such file")
    assert target.read_text() == "before\n" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("where, needle", [
    ("{tmp}/no/such/dir/kbrules.prom", "no such directory"),
    ("{tmp}", "is a directory"),
    ("/proc/kbrules.prom", "cannot create a file in /proc"),
    ("", "needs a file name"),
], ids=["no-directory", "a-directory", "cannot-create", "empty"])
def test_output_that_cannot_be_written_is_one_line(where: str, needle: str, chains: dict[str, Path],
                                                   tmp_path: Path) -> None:
    run = kbrules("check", "--format", "prometheus", "--output", where.format(tmp=tmp_path),
                  str(chains["healthy"]))
    assert_one_line_error(run, "--output", needle)


def test_a_reader_never_sees_half_a_file(tmp_path: Path) -> None:
    # node_exporter reads the file whenever Prometheus scrapes: it must see one whole
    # version or the other, however big, never a mix or an empty file.
    target = tmp_path / "kbrules.prom"
    versions = [b"a" * 300_000 + b"\n", b"b" * 200_000 + b"\n"]
    replace_file(str(target), versions[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(target.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(200):
            replace_file(str(target), versions[n % 2])
    finally:
        stop.set()
        reader.join()
    assert seen <= set(versions) and len(seen) == 2, {v[:1] + str(len(v)).encode() for v in seen}
    assert [p.name for p in tmp_path.iterdir()] == ["kbrules.prom"]


# Start-up --------------------------------------------------------------------------------

def _imports_prometheus_client(*argv: str) -> bool:
    code = ("import sys; from engine.cli import main; main(sys.argv[1:]); "
            "print('prometheus_client' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    return done.stdout.splitlines()[-1] == "True"


def test_only_the_prometheus_format_imports_the_client(chains: dict[str, Path]) -> None:
    top = str(chains["healthy"])
    assert not _imports_prometheus_client("check", "--format", "json", top)
    assert not _imports_prometheus_client("list")
    assert _imports_prometheus_client("check", "--format", "prometheus", top)
