"""Attacks through the images: what a guest can write into its disk, and what a
careless chain names, tried on real images (tests/forge.py) against kbrules. Each
refusal is one line naming the layer and the reason, and nothing is opened: the
listeners on 127.0.0.1 see no connection. Where it matters, a control shows the
attack is real (plain qemu-img, or --trust-backing, falls for it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import forge
from engine import api, inspect, qemu
from engine.errors import ToolError
from helpers import KBRULES, Listener, assert_one_line_error, fifo, kbrules, make_chain, processes_with

REFUSED = "refused (--trust-backing lets qemu-img open it)"

URLS = {
    "nbd": "nbd://127.0.0.1:{port}/disk",
    "nbd-colon": "nbd:127.0.0.1:{port}",
    "http": "http://127.0.0.1:{port}/disk.qcow2",
    "https": "https://127.0.0.1:{port}/disk.qcow2",
    "ftp": "ftp://127.0.0.1:{port}/disk.qcow2",
    "ssh": "ssh://127.0.0.1:{port}/disk.qcow2",
    "iscsi": "iscsi://127.0.0.1:{port}/iqn.2000-01.test:t/0",
    "gluster": "gluster://127.0.0.1:{port}/volume/disk.qcow2",
}


@pytest.mark.parametrize("scheme", URLS)
def test_url_backing_is_refused_and_never_contacted(scheme: str, tmp_path: Path) -> None:
    with Listener() as listener:
        url = URLS[scheme].format(port=listener.port)
        top = forge.qcow2(tmp_path / "top.qcow2", url, "raw")
        run = kbrules("check", str(top))
        time.sleep(0.1)  # a connection, had there been one, would be accepted by now
        assert not listener.accepted
    assert_one_line_error(run, f"layer 0 ({top}) names the backing file '{url}'", "not a local file", REFUSED)


def test_url_backing_is_contacted_with_trust_backing(tmp_path: Path) -> None:
    """The control: qemu-img follows the URL (and the listener never answers, so the
    input times out, and its name is in the error)."""
    with Listener() as listener:
        top = forge.qcow2(tmp_path / "top.qcow2", f"nbd://127.0.0.1:{listener.port}/disk", "raw")
        run = kbrules("check", str(top), "--trust-backing", "--timeout", "1")
        assert listener.accepted
    assert_one_line_error(run, str(top), "qemu-img did not finish within 1 s and was stopped")


def test_url_deeper_in_the_chain_is_refused_by_layer(tmp_path: Path) -> None:
    paths = make_chain(tmp_path, [{"a": "ok"}, {"a": "ok"}])
    forge.with_backing(paths[1], b"nbd://127.0.0.1:9/x", b"raw")
    run = kbrules("check", str(paths[0]))
    assert_one_line_error(run, f"layer 1 ({paths[1]}) names the backing file 'nbd://127.0.0.1:9/x'")


def test_guest_writes_a_qcow2_header_into_its_raw_disk(tmp_path: Path) -> None:
    """The disk is probed as qcow2 (as qemu-img would), and what it names is refused;
    told it is raw, kbrules reads it as the raw disk it is."""
    with Listener() as listener:
        disk = forge.raw_with_qcow2_inside(tmp_path / "guest.img", f"http://127.0.0.1:{listener.port}/x")
        probed = kbrules("check", str(disk))
        told = kbrules("check", str(disk), "--image-format", "raw", "--format", "json")
        assert not listener.accepted
    assert_one_line_error(probed, "layer 0", "http: protocol or URL", REFUSED)
    assert told.code == 0 and told.json()["chain"] == [
        {"layer": 0, "filename": str(disk), "format": "raw", "node": None}]


def test_probed_backing_file_holding_a_qcow2_header_is_inspected_too(tmp_path: Path) -> None:
    """An old overlay that does not record its backing format: qemu-img would probe
    the backing file, a raw disk whose guest wrote a qcow2 header naming a URL."""
    base = forge.raw_with_qcow2_inside(tmp_path / "base.img", "ssh://127.0.0.1:9/x")
    top = forge.without_backing_format(forge.qcow2(tmp_path / "top.qcow2", base.name))
    run = kbrules("check", str(top))
    assert_one_line_error(run, f"layer 1 ({base}) names the backing file 'ssh://127.0.0.1:9/x', a ssh: "
                          "protocol or URL, not a local file", REFUSED)


def test_secret_file_as_a_backing_file_without_a_format(tmp_path: Path) -> None:
    """/etc/shadow named as a backing file whose format is not recorded: qemu-img would
    probe it (read its first 512 bytes). kbrules reads it one layer at a time with the
    format given (-f raw), and the backing-format-probed rule reports the chain."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$SECRET-HASH:19000:0:99999:7:::\n")
    secret.chmod(0o600)
    top = forge.without_backing_format(forge.qcow2(tmp_path / "top.qcow2", str(secret)))
    plan = inspect.walk(str(top))
    assert [(i.format, i.known) for i in plan.images] == [("qcow2", True), ("raw", False)] and plan.probed
    run = kbrules("check", str(top), "--format", "json")
    assert run.code == 1 and "SECRET" not in run.out + run.err
    report = run.json()
    assert [(l["filename"], l["format"]) for l in report["chain"]] == [(str(top), "qcow2"), (str(secret), "raw")]
    assert [(f["rule"], f["layer"]) for f in report["findings"]] == [("backing-format-probed", 0)]


def test_a_backing_file_named_like_an_option_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read one layer at a time (its format not recorded), each name is an argument
    of qemu-img: a guest's backing file name must never be read as an option."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "--help").write_bytes(b"\0" * 65536)
    forge.without_backing_format(forge.qcow2(tmp_path / "top.qcow2", "--help"))
    run = kbrules("check", "top.qcow2", "--format", "json")
    assert run.code == 1, run.err  # backing-format-probed
    assert [(l["filename"], l["format"]) for l in run.json()["chain"]] == [("top.qcow2", "qcow2"), ("--help", "raw")]


def test_json_backing_reading_a_secret_is_refused(tmp_path: Path) -> None:
    """A json: blkdebug backing whose config file is a 0600 secret: qemu-img quotes a
    value of it in its error. kbrules refuses the json: name, and says nothing of it."""
    secret = tmp_path / "secret"
    secret.write_text('[inject-error]\nevent = "SECRET-TOKEN-123"\n')
    secret.chmod(0o600)
    base = forge.qcow2(tmp_path / "base.qcow2")
    backing = json.dumps({"driver": "blkdebug", "config": str(secret), "image.filename": str(base)},
                         separators=(",", ":"))
    top = forge.with_backing(forge.qcow2(tmp_path / "top.qcow2"), f"json:{backing}".encode())
    plain = subprocess.run(["qemu-img", "info", "--backing-chain", str(top)], capture_output=True, text=True)
    assert "SECRET-TOKEN-123" in plain.stderr  # the attack is real
    run = kbrules("check", str(top))
    assert_one_line_error(run, "a json: option string", REFUSED)
    assert "SECRET-TOKEN-123" not in run.err
    legacy = forge.qcow2(tmp_path / "legacy.qcow2", f"blkdebug:{secret}:{base}", "raw")
    assert_one_line_error(kbrules("check", str(legacy)), "a blkdebug: protocol or URL")


def test_vvfat_backing_walking_a_directory_is_refused(tmp_path: Path) -> None:
    top = forge.qcow2(tmp_path / "top.qcow2", "fat:/etc", "raw")
    plain = subprocess.run(["qemu-img", "info", "--output=json", "--backing-chain", str(top)],
                           capture_output=True, text=True)
    assert plain.returncode == 0 and "vvfat" in plain.stdout  # the attack is real: a vvfat layer
    assert_one_line_error(kbrules("check", str(top)), "'fat:/etc', a fat: protocol or URL", REFUSED)


@pytest.mark.parametrize("via", ["recorded", "probed", "top"])
def test_vmdk_with_an_extent_on_a_secret_is_refused(via: str, tmp_path: Path) -> None:
    """CVE-2022-47951: a vmdk descriptor's extent names any file qemu-img then opens."""
    secret = tmp_path / "shadow"
    secret.write_text("root:SECRET\n")
    vmdk = forge.vmdk_with_extent(tmp_path / "disk.vmdk", str(secret))
    plain = subprocess.run(["qemu-img", "info", "--output=json", str(vmdk)], capture_output=True, text=True)
    assert str(secret) in plain.stdout  # qemu-img opened the extent
    if via == "top":
        path, layer, how = vmdk, "layer 0", "found by its content"
    else:
        path = forge.qcow2(tmp_path / "top.qcow2", vmdk.name, "vmdk")
        if via == "probed":
            forge.without_backing_format(path)
        layer, how = "layer 1", "found by its content" if via == "probed" else "recorded by layer 0"
    run = kbrules("check", str(path))
    assert_one_line_error(run, layer, f"is a vmdk image with extents ('{secret}') ({how})",
                          "qcow2 and raw images only", REFUSED)


@pytest.mark.parametrize("kind", ["fifo", "char-device", "directory"])
def test_backing_file_that_is_not_a_regular_file_is_refused(kind: str, tmp_path: Path) -> None:
    target = {"fifo": tmp_path / "pipe", "char-device": Path("/dev/zero"), "directory": tmp_path / "dir"}[kind]
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    top = forge.qcow2(tmp_path / "top.qcow2", str(target), "raw")
    what = {"fifo": "a FIFO", "char-device": "a character device", "directory": "a directory"}[kind]
    assert_one_line_error(kbrules("check", str(top)), f"layer 1 ({target}), the backing file of layer 0, "
                          f"is {what}, not a regular file", REFUSED)


def test_external_data_file_is_refused_unless_trusted(tmp_path: Path) -> None:
    """Refused by default; --trust-backing lets qemu-img open it, and every report, from
    either engine or the Python API, says so."""
    data = tmp_path / "data.raw"
    data.write_bytes(b"\0" * 65536)
    top = forge.with_data_file(forge.qcow2(tmp_path / "top.qcow2"), str(data).encode())
    assert_one_line_error(kbrules("check", str(top)), f"layer 0 ({top}) has an external data file '{data}'",
                          REFUSED)
    for engine in ("python", "jq"):
        trusted = kbrules("check", str(top), "--trust-backing", "--format", "json", "--engine", engine)
        assert trusted.code == 0 and trusted.json()["trust_backing"] is True
    with pytest.raises(inspect.Refused, match="has an external data file"):
        api.check_path(top)
    assert api.check_path(top, trust_backing=True).chain.trust_backing
    (tmp_path / "plain").mkdir()
    assert api.check_path(make_chain(tmp_path / "plain", [{}])[0]).chain.trust_backing is False


@pytest.mark.parametrize("what, make", [
    ("65535 bitmaps", lambda p: forge.many_bitmaps(p, 65535)),
    ("65536 snapshots", lambda p: forge.many_snapshots(p, 65536)),
])
def test_bitmap_and_snapshot_bombs_end_at_once(what: str, make: object, tmp_path: Path) -> None:
    """qemu-img info spends 40 s of CPU on 65535 bitmaps (and 4 s, 390 MB on 65536
    snapshots): kbrules reads the count in the header and stops there."""
    top = make(tmp_path / "bomb.qcow2")  # type: ignore[operator]
    for trust in ([], ["--trust-backing"]):
        run = kbrules("check", str(top), *trust)
        assert_one_line_error(run, f"layer 0 ({top}) holds {what}", "more than kbrules lets qemu-img read (4096)")


def test_a_forged_report_in_a_raw_disk_is_read_as_a_disk(tmp_path: Path) -> None:
    """A guest disk that holds nothing but a qemu-img JSON document (padded with
    spaces): once read as JSON, a "valid" report of a chain that is not there."""
    from builders import bitmap, layer
    forged = json.dumps([layer("top.qcow2", [bitmap("daily", "auto")])]).encode()
    disk = tmp_path / "guest.img"
    disk.write_bytes(forged.ljust(65536, b" "))
    run = kbrules("check", str(disk), "--bitmap", "daily", "--format", "json")
    assert run.code == 1 and [l["format"] for l in run.json()["chain"]] == ["raw"]
    assert run.json()["bitmaps"][0]["valid"] is False
    assert "starts like JSON text but is read as a disk image" in run.err


def test_a_sparse_8_gib_disk_with_text_is_never_read_whole(tmp_path: Path) -> None:
    """Once read whole as would-be JSON (43 s, 16.8 GB); now an image, of which kbrules
    reads 4 KiB."""
    disk = tmp_path / "big.img"
    with disk.open("wb") as f:
        f.write(b'{"filename": "x", "format": "qcow2"}\n')
        f.truncate(8 << 30)
    run = kbrules("check", str(disk), "--format", "json")
    assert run.code == 0 and run.json()["chain"][0]["format"] == "raw"


def _console(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(KBRULES), *argv], capture_output=True, timeout=60, **kwargs)  # type: ignore[call-overload]


def test_endless_stdin_is_cut_at_the_size_limit() -> None:
    """cat /dev/zero | kbrules check -: once a MemoryError traceback."""
    with open("/dev/zero", "rb") as zero:
        done = _console("check", "-", "--max-json-size", "1M", stdin=zero)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode() == "kbrules: <stdin>: more than 1048576 bytes of JSON, the limit " \
                                   "(raise it with --max-json-size)\n"


def test_json_file_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 2048 + b"[]")
    assert_one_line_error(kbrules("check", str(path), "--max-json-size", "2K"), "more than 2048 bytes of JSON")
    assert_one_line_error(kbrules("check", str(path), "--max-json-size", "3K"), "an empty array")  # read
    assert_one_line_error(kbrules("check", str(path), "--max-json-size", "lots"), "not a size: 'lots'")


@pytest.mark.parametrize("name", ["pipe", "pipe.json"])
def test_a_fifo_path_is_refused_without_being_opened(name: str, tmp_path: Path) -> None:
    """A FIFO nobody writes to once hung a batch forever. The console script, with a
    deadline: a hang fails the test instead of hanging it."""
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"filename": "a", "format": "raw", "virtual-size": 1}]))
    with fifo(tmp_path / name) as path:
        done = _console("check", str(path), str(good), "--format", "jsonl")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 2 and [e["input"] for e in lines] == [str(path), str(good)]
    assert ("is a FIFO" if name == "pipe" else "not a regular file") in lines[0]["error"]
    assert "chain" in lines[1]


def test_device_paths_are_refused() -> None:
    assert_one_line_error(kbrules("check", "/dev/zero"), "/dev/zero: is a character device")
    assert_one_line_error(kbrules("check", "--json", "/dev/zero"), "/dev/zero: not a regular file")


# qemu-img's walls (engine/qemu.py), tried directly.

@pytest.mark.parametrize("prlimit", [True, False], ids=["prlimit", "in-the-child"])
def test_cpu_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prlimit: bool) -> None:
    """16000 bitmaps: 2.4 s of CPU for qemu-img info; with 1 s allowed, it is stopped,
    by prlimit or, where it is missing, by limits set in the child."""
    if not prlimit:
        monkeypatch.setattr(qemu, "_which", lambda name: None if name == "prlimit" else shutil.which(name))
    bomb = forge.many_bitmaps(tmp_path / "b.qcow2", 16000)
    with pytest.raises(ToolError, match=r"qemu-img used up its CPU time limit \(1 s\) \(SIGXCPU\)"):
        qemu.info(str(bomb), "qcow2", limits=qemu.Limits(cpu=1))


def test_memory_limit(tmp_path: Path) -> None:
    """20000 snapshots: about 120 MB for qemu-img info; with 64 MiB allowed, it fails."""
    bomb = forge.many_snapshots(tmp_path / "s.qcow2", 20000)
    assert qemu.info(str(bomb), "qcow2")[0]  # within the default limits
    with pytest.raises(ToolError, match=r"memory limit (of )?\(?64 MiB"):
        qemu.info(str(bomb), "qcow2", limits=qemu.Limits(memory=64 << 20))


def test_no_file_is_written(tmp_path: Path) -> None:
    ran = qemu.run(["qemu-img", "create", "-f", "raw", str(tmp_path / "x.raw"), "1M"], "x")
    assert ran.returncode != 0 and (tmp_path / "x.raw").stat().st_size == 0


def test_no_network() -> None:
    if not qemu.no_network():
        pytest.skip("no network namespace on this platform: qemu-img runs with the limits only")
    with Listener() as listener:
        url = f"nbd://127.0.0.1:{listener.port}/x"
        ran = qemu.run(["qemu-img", "info", url], url, timeout=30)
        assert ran.returncode == 1 and not listener.accepted
        with pytest.raises(qemu.TimedOut):  # the control: with the network, it connects
            qemu.run(["qemu-img", "info", url], url, timeout=1, network=True)
        assert listener.accepted


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    """A FIFO as backing file, with --trust-backing: qemu-img blocks opening it. It is
    killed at the timeout, with its group, and the input says so."""
    with fifo(tmp_path / "hang") as hang:
        top = forge.qcow2(tmp_path / "top.qcow2", str(hang), "raw")
        run = kbrules("check", str(top), "--trust-backing", "--timeout", "0.5")
        assert processes_with(str(hang)) == [] and processes_with(str(top)) == []
    assert_one_line_error(run, str(top), "qemu-img did not finish within 0.5 s and was stopped")


def test_qemu_img_stderr_is_one_short_line(tmp_path: Path) -> None:
    socket = tmp_path / ("x" * 200)  # qemu-img names it in its error: a long line
    top = forge.qcow2(tmp_path / "top.qcow2", f"nbd+unix:///disk?socket={socket}", "raw")
    run = kbrules("check", str(top), "--trust-backing")
    line = assert_one_line_error(run, "qemu-img info failed (exit 1): qemu-img: Could not open")
    assert line.endswith("…") and len(line.split("qemu-img info failed (exit 1): ")[1]) == qemu.QUOTE



def test_without_unshare_the_limits_still_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform with no unshare: qemu-img runs with the network, and the limits on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-img").symlink_to(shutil.which("qemu-img") or "qemu-img")
    monkeypatch.setenv("PATH", str(bin_dir))
    qemu.no_network.cache_clear()
    try:
        assert qemu.no_network() == ()
        top = make_chain(tmp_path, [{"a": "ok"}])[0]
        assert kbrules("check", str(top)).code == 0
        bomb = forge.many_bitmaps(tmp_path / "b.qcow2", 16000)
        with pytest.raises(ToolError, match=r"used up its CPU time limit \(1 s\)"):
            qemu.info(str(bomb), "qcow2", limits=qemu.Limits(cpu=1))
    finally:
        qemu.no_network.cache_clear()


def test_no_network_for_a_user_that_is_not_root(tmp_path: Path) -> None:
    """As another user, the network namespace comes with a user namespace of its own."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to run a test process as another user")
    # Without namespaces (a chroot cannot make one) qemu-img is not run: it would wait
    # on the listener until the timeout.
    code = ("import sys; from engine import qemu; net = qemu.no_network(); "
            "ran = qemu.run(['qemu-img', 'info', sys.argv[1]], 'x', timeout=20) if net else None; "
            "print(' '.join(net), ran and ran.returncode)")
    # The package from this tree, copied where that user can read it (a clone under
    # /root cannot be), run by the system's Python (a venv under /root cannot be either).
    shared = Path(tempfile.mkdtemp(prefix="kbrules-nobody-"))
    try:
        shared.chmod(0o755)
        shutil.copytree(Path(__file__).resolve().parents[1] / "engine", shared / "engine",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in shared.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        with Listener() as listener:
            done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                                   python, "-c", code, f"nbd://127.0.0.1:{listener.port}/x"],
                                  capture_output=True, text=True, cwd="/", timeout=60,
                                  env={**os.environ, "PYTHONPATH": str(shared)})
            accepted = listener.accepted
    finally:
        shutil.rmtree(shared)
    assert done.returncode == 0, done.stderr
    if not done.stdout.startswith("unshare"):
        pytest.skip("user namespaces are off here: qemu-img runs with the limits only")
    assert done.stdout.split() == ["unshare", "--user", "--map-root-user", "--net", "--", "1"]
    assert not accepted
