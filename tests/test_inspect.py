"""kbrules' own reading of image headers (engine/inspect.py), held to qemu-img's on
real images: every format qemu-img can make, every header a test forges. (make_chain
checks every image it makes the same way: helpers.agrees_with_qemu.)"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import forge
from builders import bitmap, layer
from engine import inspect, qemu
from helpers import agrees_with_qemu, kbrules

# Every format qemu-img can create here, probed by kbrules as qemu-img probes it.
CREATABLE = {"raw": [], "qcow2": [], "qcow2-v2": ["-o", "compat=0.10"], "qcow": [], "qed": [],
             "vdi": [], "vpc": [], "vhdx": [], "vmdk": [], "vmdk-flat": ["-o", "subformat=monolithicFlat"],
             "parallels": []}
# (luks is left out: qemu-img cannot time its key derivation in some containers.)


@pytest.mark.parametrize("name", CREATABLE)
def test_probe_agrees_with_qemu_img(name: str, tmp_path: Path) -> None:
    fmt = name.split("-")[0]
    path = tmp_path / f"disk.{fmt}"
    forge.qemu_img("create", "-q", "-f", fmt, *CREATABLE[name], str(path), "1M")
    agrees_with_qemu(path)
    assert inspect.probe(path.read_bytes()[:512], str(path)) == fmt


FORGED: dict[str, Callable[[Path], Path]] = {
    "url-backing": lambda d: forge.qcow2(d / "t.qcow2", "nbd://127.0.0.1:1/x", "raw"),
    "json-backing": lambda d: forge.qcow2(d / "t.qcow2", 'json:{"driver": "null-co"}', "raw"),
    "no-backing-format": lambda d: forge.without_backing_format(forge.qcow2(d / "t.qcow2", "base.qcow2")),
    "nul-in-backing-name": lambda d: forge.with_backing(forge.qcow2(d / "t.qcow2"), b"base\0evil", b"qcow2\0x"),
    "non-utf8-backing-name": lambda d: forge.with_backing(forge.qcow2(d / "t.qcow2"), b"b\xffse", b"raw"),
    "data-file": lambda d: forge.with_data_file(forge.qcow2(d / "t.qcow2"), b"/nonexistent/data"),
    "300-bitmaps": lambda d: forge.many_bitmaps(d / "t.qcow2", 300),
    "300-snapshots": lambda d: forge.many_snapshots(d / "t.qcow2", 300),
    "bitmaps-extension-not-valid": lambda d: forge.rewrite(forge.many_bitmaps(d / "t.qcow2", 3), autoclear=0),
    "qcow2-inside-raw": lambda d: forge.raw_with_qcow2_inside(d / "guest.img", "/etc/passwd"),
}


@pytest.mark.parametrize("name", FORGED)
def test_forged_headers_read_as_qemu_img_reads_them(name: str, tmp_path: Path) -> None:
    agrees_with_qemu(FORGED[name](tmp_path))


def _set(offset: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    return lambda data: struct.pack_into(fmt, data, offset, value)


# Headers QEMU refuses to open: kbrules refuses them too, before qemu-img runs.
BROKEN = {
    "version-4": (_set(4, ">I", 4), "unsupported qcow2 version 4"),
    "cluster-bits-30": (_set(20, ">I", 30), "unsupported cluster size 2^30"),
    "header-too-short": (_set(100, ">I", 64), "header length 64 is too short"),
    "backing-offset-past-cluster": (_set(8, ">Q", 1 << 20), "invalid backing file offset"),
    "backing-name-too-long": (_set(16, ">I", 5000), "backing file name too long"),
    "extension-too-large": (lambda data: struct.pack_into(">I", data, struct.unpack_from(">I", data, 100)[0] + 4,
                                                          1 << 20), "a header extension is too large"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_headers_qemu_refuses_are_refused(name: str, tmp_path: Path) -> None:
    path = forge.qcow2(tmp_path / "t.qcow2", "base.qcow2", "qcow2")
    forge.qcow2(tmp_path / "base.qcow2")
    data = bytearray(path.read_bytes())
    mutate, why = BROKEN[name]
    mutate(data)
    path.write_bytes(bytes(data))
    ran = qemu.run(["qemu-img", "info", "--output=json", str(path)], str(path))
    assert ran.returncode == 1, ran  # qemu-img refuses it...
    with pytest.raises(inspect.BadHeader, match=re.escape(why)):  # ...and so does kbrules' reader
        inspect.parse_qcow2(data[:inspect.qcow2_size(bytes(data))])


def test_has_protocol_is_qemus_path_has_protocol() -> None:
    for name in ("nbd://h/x", "nbd:unix:/s", "json:{}", "fat:/etc", "http://a", "a:b"):
        assert inspect.has_protocol(name), name
    for name in ("/abs/a:b", "dir/a:b", "./a:b", "plain.qcow2", ""):
        assert not inspect.has_protocol(name), name


# Property: whatever bytes a guest writes into its raw disk, kbrules reports the chain
# that is there (that one file, raw or qcow2) or refuses in one line, and never names a
# file beyond it. The bytes: random; a forged qemu-img JSON report of a healthy chain
# (once taken for JSON input: a "valid" report of a chain that is not there); or a
# qcow2 image's first bytes made by qemu-img with random bytes written over some.

FORGED_REPORT = json.dumps([layer("top.qcow2", [bitmap("daily", "auto")], backing="base.qcow2"),
                            layer("base.qcow2", [bitmap("daily", "auto")])]).encode()


@st.composite
def guest_bytes(draw: st.DrawFn, header: bytes) -> bytes:
    """A whole small disk: what the guest wrote, padded with zeros (with spaces after
    JSON, so that the whole disk is JSON text)."""
    kind = draw(st.sampled_from(["random", "json", "qcow2"]))
    if kind == "random":
        return draw(st.binary(min_size=0, max_size=1024)).ljust(65536, b"\0")
    if kind == "json":
        return (FORGED_REPORT + draw(st.sampled_from([b"", b"\n", b" x"]))).ljust(65536, b" ")
    data = bytearray(header)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, 127 if draw(st.booleans()) else len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=8))
        data[at:at + len(patch)] = patch
    return bytes(data).ljust(65536, b"\0")


@pytest.fixture(scope="module")
def qcow2_head(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("head")
    return forge.qcow2(d / "t.qcow2", "other.qcow2", "qcow2").read_bytes()[:4096]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_random_bytes_in_a_raw_image_never_make_a_chain(data: st.DataObject, qcow2_head: bytes,
                                                         tmp_path: Path) -> None:
    disk = tmp_path / "guest.img"
    written = data.draw(guest_bytes(qcow2_head))
    disk.write_bytes(written)
    run = kbrules("check", str(disk), "--format", "json")
    assert "Traceback" not in run.err
    if run.code == 2:
        assert run.out == "" and run.err.count("\n") == 1, run
        return
    report = json.loads(run.out)
    assert [layer["filename"] for layer in report["chain"]] == [str(disk)], report["chain"]
    assert report["chain"][0]["format"] == ("qcow2" if written.startswith(b"QFI\xfb") else "raw")
    assert report["bitmaps"] == [] and run.code in (0, 1)
