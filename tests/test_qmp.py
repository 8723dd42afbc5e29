"""QMP query-named-block-nodes input: libvirt's own data, and our own capture from a
real QEMU (tests/fixtures/qmp-two-disks.json, made by tests/fixtures/capture-qmp.py
with qemu-storage-daemon 7.2: two disks, vda of three layers, vdb of two).

The tests read only the committed JSON; re-capturing needs qemu-storage-daemon, which
CI machines do not have (the last test does it when the daemon is there)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from engine.loader import load_rules
from builders import node
from helpers import FIXTURES, LIBVIRT, Run, assert_one_line_error, kbrules, verdicts

RULES = load_rules()



CAPTURE = FIXTURES / "capture-qmp.py"
TWO_DISKS = FIXTURES / "qmp-two-disks.json"
LIBVIRT_FILES = ["basic", "empty", "snapshots", "synthetic"]

# What capture-qmp.py builds, and libvirt's verdicts on it.
VDA = {"a": (True, []), "b": (False, [("bitmap-recording", 1)]), "c": (True, []),
       "current": (True, []), "transient": (False, [("bitmap-persistent", 0)])}
VDB = {"x": (True, []), "y": (True, [])}
DIR = "/tmp/kbrules-qmp-capture"


def reply() -> dict[str, Any]:
    value = json.loads(TWO_DISKS.read_text())
    assert isinstance(value, dict) and list(value) == ["return"]
    return value


def run_value(value: Any, *argv: str) -> Run:
    return kbrules("check", "-", "--format", "json", *argv, stdin=json.dumps(value).encode())


# ------------------------------------------------------------------ libvirt's data

@pytest.mark.parametrize("name", LIBVIRT_FILES)
def test_libvirt_bare_and_wrapped_give_the_same_report(name: str, tmp_path: Path) -> None:
    path = LIBVIRT / f"{name}.json"
    nodes = json.loads(path.read_text())
    assert isinstance(nodes, list)
    wrapped = tmp_path / f"{name}-reply.json"
    wrapped.write_text(json.dumps({"return": nodes}, indent=2))
    for fmt in ("json", "text"):
        by_path = kbrules("check", str(path), "--format", fmt)
        by_wrapped_path = kbrules("check", str(wrapped), "--format", fmt)
        by_stdin = kbrules("check", "-", "--format", fmt, stdin=path.read_bytes())
        by_wrapped_stdin = kbrules("check", "-", "--format", fmt,
                                   stdin=json.dumps({"return": nodes}).encode())
        assert by_path.err == "" and by_path.code in (0, 1)
        assert by_path == by_wrapped_path == by_stdin == by_wrapped_stdin, fmt
    report = kbrules("check", str(path), "--format", "json").json()
    assert report["source"] == "qmp"
    assert report["chain"][0]["node"] == "libvirt-1-format"


@pytest.mark.parametrize("name", LIBVIRT_FILES)
def test_libvirt_chain_order(name: str) -> None:
    """Top is libvirt-1-format, then the numbers go up to the base (libvirt's layout)."""
    chain = kbrules("check", str(LIBVIRT / f"{name}.json"), "--format", "json").json()["chain"]
    numbers = [int(layer["node"].split("-")[1]) for layer in chain]
    assert numbers == sorted(numbers) and numbers[0] == 1
    assert all(layer["node"].endswith("-format") for layer in chain)


def test_libvirt_files_are_all_there() -> None:
    assert sorted(p.stem for p in LIBVIRT.glob("*.json")) == LIBVIRT_FILES


# ------------------------------------------------------------------ our capture

def test_fixture_is_a_real_capture_of_what_the_script_describes() -> None:
    """The committed JSON and the capture script agree: every node the script makes,
    with the bitmaps it adds, and QEMU's own fields around them."""
    spec = importlib.util.spec_from_file_location("capture_qmp", CAPTURE)
    assert spec is not None and spec.loader is not None
    capture: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(capture)
    nodes = reply()["return"]
    expected_names = set()
    for layers in capture.DISKS.values():
        for image, prefix, bitmaps in layers:
            fmt, storage = node(nodes, f"{prefix}-format"), node(nodes, f"{prefix}-storage")
            expected_names |= {f"{prefix}-format", f"{prefix}-storage"}
            assert fmt["drv"] == "qcow2" and storage["drv"] == "file"
            assert fmt["file"] == storage["file"] == f"{DIR}/{image}"
            held = {b["name"]: b for b in fmt.get("dirty-bitmaps", [])}
            if (f"{prefix}-format", "transient") == capture.TRANSIENT:
                assert held.pop("transient")["persistent"] is False
            assert set(held) == set(bitmaps), prefix
            for name, state in bitmaps.items():
                assert held[name]["recording"] is (state == "ok"), (prefix, name)
                assert held[name]["persistent"] is True and "inconsistent" not in held[name]
    assert {n["node-name"] for n in nodes} == expected_names
    # Real QEMU fields, not hand-made data:
    top = node(nodes, "top-format")
    assert top["image"]["format-specific"]["type"] == "qcow2"
    assert top["image"]["backing-filename"] == f"{DIR}/mid.qcow2"
    assert {"iops", "cache", "detect_zeroes", "backing_file_depth"} <= set(top)


def test_two_disks_without_top_lists_each_candidate_and_its_file(tmp_path: Path) -> None:
    for run in (kbrules("check", str(TWO_DISKS)), run_value(reply()), run_value(reply()["return"])):
        line = assert_one_line_error(run)
        assert "2 disks" in line and "--top" in line
        assert f"top-format ({DIR}/top.qcow2)" in line
        assert f"data-top-format ({DIR}/data-top.qcow2)" in line
        assert line.count("-format (") == 2  # the two tops only, not lower layers
        assert "-storage" not in line


@pytest.mark.parametrize("top, expected, files", [
    ("top-format", VDA, ["top", "mid", "base"]),
    ("data-top-format", VDB, ["data-top", "data-base"]),
])
def test_each_disk_with_top(top: str, expected: dict[str, Any], files: list[str]) -> None:
    for run in (kbrules("check", str(TWO_DISKS), "--top", top, "--format", "json"),
                run_value(reply(), "--top", top), run_value(reply()["return"], "--top", top)):
        assert run.err == ""
        assert run.code == (1 if any(not v for v, _ in expected.values()) else 0)
        assert verdicts(run) == expected
        report = run.json()
        assert report["source"] == "qmp" and report["findings"] == []
        assert [l["filename"] for l in report["chain"]] == [f"{DIR}/{f}.qcow2" for f in files]
        assert [l["node"] for l in report["chain"]] == [f"{f}-format" for f in files]


def test_transient_bitmap_finding_names_the_node() -> None:
    run = run_value(reply(), "--top", "top-format")
    (finding,) = next(b for b in run.json()["bitmaps"] if b["name"] == "transient")["findings"]
    assert finding["rule"] == "bitmap-persistent" and finding["filename"] == f"{DIR}/top.qcow2"
    assert "top-format" in finding["remediation"]


def test_text_report_with_top() -> None:
    run = kbrules("check", str(TWO_DISKS), "--top", "top-format")
    assert run.code == 1 and run.err == ""
    assert "chain from qmp, 3 layers" in run.out
    assert "5 bitmaps checked: 3 valid, 2 not valid" in run.out


@pytest.mark.parametrize("top", ["vda", "top-storage", "libvirt-1-format", ""])
def test_unknown_top_lists_candidates(top: str) -> None:
    line = assert_one_line_error(kbrules("check", str(TWO_DISKS), "--top", top))
    assert f"no format node named {top!r}" in line
    assert f"top-format ({DIR}/top.qcow2)" in line
    assert f"data-top-format ({DIR}/data-top.qcow2)" in line


def test_top_may_name_a_lower_layer() -> None:
    """--top names the node to start from: a lower layer checks the chain below it."""
    run = run_value(reply(), "--top", "mid-format")
    assert [l["node"] for l in run.json()["chain"]] == ["mid-format", "base-format"]
    assert verdicts(run)["b"] == (False, [("bitmap-recording", 0)])


def test_one_disk_needs_no_top() -> None:
    nodes = [n for n in reply()["return"] if not n["node-name"].startswith("data-")]
    run = run_value(nodes)
    assert verdicts(run) == VDA


def test_node_order_does_not_matter() -> None:
    nodes = reply()["return"]
    forward = run_value(nodes, "--top", "top-format")
    backward = run_value(nodes[::-1], "--top", "top-format")
    assert forward == backward


# --------------------------------------------------------- edited captures

def test_missing_backing_node_gives_chain_complete() -> None:
    """The base's nodes are left out: mid names a backing file that is not there."""
    nodes = [n for n in reply()["return"] if not n["node-name"].startswith("base-")]
    run = run_value(nodes, "--top", "top-format")
    assert run.code == 1 and run.err == ""
    report = run.json()
    assert [l["node"] for l in report["chain"]] == ["top-format", "mid-format"]
    got = verdicts(run)
    assert set(got) == set(VDA)
    for name, (valid, findings) in got.items():
        assert not valid and ("chain-complete", 1) in findings, name
    finding = next(f for f in report["bitmaps"][0]["findings"] if f["rule"] == "chain-complete")
    assert finding["filename"] == f"{DIR}/mid.qcow2"


def test_missing_backing_node_on_the_other_disk_only() -> None:
    nodes = [n for n in reply()["return"] if not n["node-name"].startswith("data-base-")]
    assert verdicts(run_value(nodes, "--top", "top-format")) == VDA
    other = verdicts(run_value(nodes, "--top", "data-top-format"))
    assert other == {"x": (False, [("chain-complete", 0)]), "y": (False, [("chain-complete", 0)])}


@pytest.mark.parametrize("layer, index", [("top-format", 0), ("mid-format", 1), ("base-format", 2)])
def test_inconsistent_gives_bitmap_consistent(layer: str, index: int) -> None:
    value = reply()
    bitmap = next(b for b in node(value["return"], layer)["dirty-bitmaps"] if b["name"] == "a")
    bitmap["inconsistent"] = True  # QEMU adds the key only when true
    got = verdicts(run_value(value, "--top", "top-format"))
    assert got["a"] == (False, [("bitmap-consistent", index)])
    assert {k: v for k, v in got.items() if k != "a"} == {k: v for k, v in VDA.items() if k != "a"}


def test_inconsistent_false_is_the_same_as_absent() -> None:
    value = reply()
    for b in node(value["return"], "top-format")["dirty-bitmaps"]:
        b["inconsistent"] = False
    assert verdicts(run_value(value, "--top", "top-format")) == VDA


def test_busy_is_not_looked_at() -> None:
    """libvirt ignores busy (a backup job running on the bitmap): only a warning of the
    image-health rules says so, and no verdict changes."""
    value = reply()
    for b in node(value["return"], "top-format")["dirty-bitmaps"]:
        b["busy"] = True
    assert verdicts(run_value(value, "--top", "top-format", "--ignore", "bitmap-busy")) == VDA
    warned = verdicts(run_value(value, "--top", "top-format"))
    assert {n: v for n, (v, _) in warned.items()} == {n: v for n, (v, _) in VDA.items()}
    assert all(("bitmap-busy", 0) in found for _, found in warned.values())


def test_bitmap_only_below_a_gap() -> None:
    """'a' removed from mid: its copy in the base is cut off from the top."""
    value = reply()
    mid = node(value["return"], "mid-format")
    mid["dirty-bitmaps"] = [b for b in mid["dirty-bitmaps"] if b["name"] != "a"]
    assert verdicts(run_value(value, "--top", "top-format"))["a"] == (
        False, [("bitmap-contiguous", 2)])


def test_old_qemu_status_field() -> None:
    """QEMU before 4.0 had 'status' (active/disabled/frozen/locked), not 'recording'."""
    value = reply()
    for b in node(value["return"], "mid-format")["dirty-bitmaps"]:
        b.pop("recording")
        b["status"] = "disabled" if b["name"] == "b" else "active"
    assert verdicts(run_value(value, "--top", "top-format")) == VDA


def test_qmp_error_reply_from_the_same_command() -> None:
    error = {"error": {"class": "CommandNotFound",
                       "desc": "The command query-named-block-nodes has not been found"}}
    line = assert_one_line_error(run_value(error))
    assert "QMP error reply: CommandNotFound: The command query-named-block-nodes" in line


# --------------------------------------------------------- re-capture, when possible

@pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None,
                    reason="needs qemu-storage-daemon (Debian: qemu-system-common)")
def test_recapture_gives_the_same_verdicts(tmp_path: Path) -> None:
    out = tmp_path / "capture.json"
    done = subprocess.run([sys.executable, str(CAPTURE), "--dir", str(tmp_path / "images"),
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for top, expected in (("top-format", VDA), ("data-top-format", VDB)):
        assert verdicts(kbrules("check", str(out), "--top", top, "--format", "json")) == expected
    fresh = json.loads(out.read_text())["return"]
    committed = reply()["return"]

    def shape(nodes: list[dict[str, Any]]) -> dict[str, Any]:
        return {n["node-name"]: (n["drv"], sorted((b["name"], b["recording"], b["persistent"])
                                                  for b in n.get("dirty-bitmaps", [])))
                for n in nodes}
    assert shape(fresh) == shape(committed)
