"""kbrules check --domain against a real libvirtd: for each scenario, a TCG domain is
made broken (or not) the way it happens in life, and kbrules' answer for an
incremental backup from a checkpoint must be libvirt's own answer to `virsh
backup-begin` from it, asked right after: accepted, refused because libvirt has no such
checkpoint, or refused because the bitmap is missing or broken.

libvirtd is started by the session fixture when none runs, and stopped at the end; each
domain and its images are removed when its test ends, pass or fail."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

import libvirtd
from helpers import assert_one_line_error, kbrules
from libvirtd import Domain, images_dir, qemu_img

pytestmark = pytest.mark.slow  # a real libvirtd: seconds per scenario

ACCEPTED, NOT_FOUND, BROKEN = "accepted", "checkpoint not found", "missing or broken bitmap"


@pytest.fixture(scope="module")
def daemons() -> Iterator[libvirtd.Daemons]:
    why = libvirtd.missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the libvirt tests: {why}")
        pytest.skip(why)
    libvirtd.DAEMONS.ensure()
    yield libvirtd.DAEMONS


@pytest.fixture
def workdir(daemons: libvirtd.Daemons) -> Iterator[Path]:
    path = images_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def domains(workdir: Path) -> Iterator[Callable[..., Domain]]:
    made: list[Domain] = []

    def make(**disks: list[str]) -> Domain:
        """A domain whose disk TARGET has the chain of image names given, top first,
        each qcow2 overlay of the next one."""
        tops = {}
        for target, chain in disks.items():
            below: Optional[str] = None
            for image in reversed(chain):
                if not (workdir / image).exists():
                    backing = ["-b", str(workdir / below), "-F", "qcow2"] if below else []
                    qemu_img("create", "-q", "-f", "qcow2", *backing, image, "64M", cwd=workdir)
                below = image
            tops[target] = workdir / chain[0]
        domain = Domain(workdir, tops).define()
        made.append(domain)
        return domain

    yield make
    for domain in made:
        domain.close()


def libvirt_answer(done: Any) -> str:
    if done.returncode == 0:
        return ACCEPTED
    for answer in (NOT_FOUND, BROKEN):
        if answer in done.stderr.lower():
            return answer
    raise AssertionError(f"libvirt's answer is neither: {done.stderr}")


def kbrules_report(domain: Domain, *extra: str) -> list[dict[str, Any]]:
    run = kbrules("check", "--domain", domain.name, "-c", libvirtd.URI, "--format", "json", *extra)
    assert run.code in (0, 1) and run.err == "", run
    return run.json()


def kbrules_answer(entry: dict[str, Any], checkpoint: str) -> str:
    """What kbrules' report says of an incremental backup of this disk from `checkpoint`."""
    point = next((c for c in entry["checkpoints"] if c["name"] == checkpoint), None)
    if point is None:
        return NOT_FOUND
    return ACCEPTED if point["usable"] else BROKEN


def assert_agree(domain: Domain, checkpoint: str, expected: str, report: Optional[list[Any]] = None) -> list[Any]:
    """kbrules and libvirt give the same answer, and it is the scenario's."""
    report = report if report is not None else kbrules_report(domain)
    for entry in report:
        assert entry["domain"]["name"] == domain.name and entry["domain"]["running"] == domain.running()
    answers = {e["domain"]["disk"]: kbrules_answer(e, checkpoint) for e in report}
    libvirt = libvirt_answer(domain.backup(checkpoint))
    assert libvirt == expected, f"libvirt: {libvirt}, not {expected} as the scenario means"
    # libvirt refuses the backup when any disk's bitmap is refused.
    together = ACCEPTED if all(a == ACCEPTED for a in answers.values()) else \
        NOT_FOUND if NOT_FOUND in answers.values() else BROKEN
    assert together == libvirt, (answers, libvirt, report)
    return report


def assert_fix_works(vm: Domain, report: list[Any], checkpoint: str, metadata: bool = False) -> None:
    """The advice for a running domain is libvirt's own command, and it works: the
    checkpoint goes, and a full backup is possible again."""
    (entry,) = report
    verdict = next(b for b in entry["bitmaps"] if b["name"] == checkpoint)
    fix = verdict["findings"][0]["remediation"]
    assert f"virsh checkpoint-delete -- '{vm.name}' '{checkpoint}'" in fix, fix
    assert "qemu-img bitmap --remove" not in fix or "shut off" in fix, fix
    libvirtd.virsh("checkpoint-delete", *(["--metadata"] if metadata else []), "--", vm.name, checkpoint)
    assert checkpoint not in libvirtd.virsh("checkpoint-list", "--name", vm.name).stdout.split()
    after = kbrules_report(vm)[0]
    assert all(b["name"] != checkpoint for b in after["bitmaps"]), after


def first_rule(report: list[Any], bitmap: str) -> str:
    (entry,) = report
    verdict = next(b for b in entry["bitmaps"] if b["name"] == bitmap)
    return verdict["findings"][0]["rule"]


# ------------------------------------------------------------------ the scenarios

def test_healthy_chain(domains: Callable[..., Domain]) -> None:
    vm = domains(vda=["top.qcow2", "base.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    report = assert_agree(vm, "c1", ACCEPTED)
    assert report[0]["newest_usable_checkpoint"] == "c1"


def test_bitmap_disabled(domains: Callable[..., Domain]) -> None:
    vm = domains(vda=["top.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    vm.qmp("block-dirty-bitmap-disable", node="libvirt-1-format", name="c1")
    report = assert_agree(vm, "c1", BROKEN)
    assert first_rule(report, "c1") == "bitmap-recording"
    assert_fix_works(vm, report, "c1")


def test_removed_from_the_top_after_a_snapshot(domains: Callable[..., Domain], workdir: Path) -> None:
    vm = domains(vda=["base.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    vm.snapshot("vda", workdir / "overlay.qcow2")
    top = kbrules_report(vm)[0]["chain"][0]["node"]
    vm.qmp("block-dirty-bitmap-remove", node=top, name="c1")
    report = assert_agree(vm, "c1", BROKEN)
    assert first_rule(report, "c1") == "bitmap-in-top"


def test_gap_in_a_three_layer_chain(domains: Callable[..., Domain], workdir: Path) -> None:
    vm = domains(vda=["top.qcow2", "mid.qcow2", "base.qcow2"])
    for image in ("top.qcow2", "base.qcow2"):  # not in mid: a gap
        qemu_img("bitmap", "--add", image, "c1", cwd=workdir)
    vm.redefine_checkpoint("c1", ["vda"], created=1)
    vm.start()
    report = assert_agree(vm, "c1", BROKEN)
    assert first_rule(report, "c1") == "bitmap-contiguous"


def test_killed_qemu_then_restart(domains: Callable[..., Domain]) -> None:
    vm = domains(vda=["top.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    vm.destroy()  # a clean stop stores the bitmap in the image...
    vm.start()  # ...and a start marks it in use there
    os.kill(vm.qemu_pid(), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while vm.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    vm.start()  # libvirt starts it again without a word; the bitmap is inconsistent
    report = assert_agree(vm, "c1", BROKEN)
    # QEMU also says "not recording": the root cause comes first.
    assert first_rule(report, "c1") == "bitmap-consistent"
    assert_fix_works(vm, report, "c1")


def test_transient_bitmap(domains: Callable[..., Domain]) -> None:
    vm = domains(vda=["top.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    vm.qmp("block-dirty-bitmap-remove", node="libvirt-1-format", name="c1")
    vm.qmp("block-dirty-bitmap-add", node="libvirt-1-format", name="c1", persistent=False)
    report = assert_agree(vm, "c1", BROKEN)
    assert first_rule(report, "c1") == "bitmap-persistent"
    assert_fix_works(vm, report, "c1")


def test_bitmap_without_a_checkpoint(domains: Callable[..., Domain]) -> None:
    vm = domains(vda=["top.qcow2"])
    vm.start()
    vm.qmp("block-dirty-bitmap-add", node="libvirt-1-format", name="stray", persistent=True)
    report = assert_agree(vm, "stray", NOT_FOUND)
    assert first_rule(report, "stray") == "bitmap-has-checkpoint"


def test_checkpoint_whose_bitmap_was_removed(domains: Callable[..., Domain]) -> None:
    vm = domains(vda=["top.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    vm.qmp("block-dirty-bitmap-remove", node="libvirt-1-format", name="c1")
    report = assert_agree(vm, "c1", BROKEN)
    assert first_rule(report, "c1") == "bitmap-in-top"
    assert "--metadata" in report[0]["bitmaps"][0]["findings"][0]["remediation"]
    assert_fix_works(vm, report, "c1", metadata=True)


def test_granularity_differing_across_layers(domains: Callable[..., Domain], workdir: Path) -> None:
    vm = domains(vda=["top.qcow2", "base.qcow2"])
    qemu_img("bitmap", "--add", "-g", "1M", "top.qcow2", "c1", cwd=workdir)
    qemu_img("bitmap", "--add", "-g", "64K", "base.qcow2", "c1", cwd=workdir)
    vm.redefine_checkpoint("c1", ["vda"], created=1)
    vm.start()
    report = assert_agree(vm, "c1", ACCEPTED)
    rules = [f["rule"] for f in report[0]["bitmaps"][0]["findings"]]
    assert rules == ["bitmap-granularity-mismatch"]  # a warning: still valid


def test_mid_backup_gives_the_same_verdicts(domains: Callable[..., Domain], workdir: Path) -> None:
    vm = domains(vda=["top.qcow2", "base.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    vm.checkpoint("c2")
    before = kbrules_report(vm)
    sockets = workdir / "sockets"
    sockets.mkdir()
    sockets.chmod(0o777)  # qemu runs as libvirt-qemu: the NBD socket and scratch go here
    vm.pull_backup("c1", sockets)
    nodes = libvirtd.virsh("qemu-monitor-command", vm.name, json.dumps(
        {"execute": "query-named-block-nodes", "arguments": {"flat": True}})).stdout
    assert "copy-before-write" in nodes or "backup-top" in nodes  # the job is really there
    during = kbrules_report(vm)
    assert during == before
    # Bare QMP data taken mid-backup: the scratch image is not taken for the top.
    run = kbrules("check", "-", "--format", "json", stdin=nodes.encode())
    assert run.code == 0, run.err
    assert [layer["node"] for layer in run.json()["chain"]] == ["libvirt-1-format", "libvirt-2-format"]
    vm.abort_job()
    assert_agree(vm, "c1", ACCEPTED, before)


def test_two_disks_sharing_a_base(domains: Callable[..., Domain]) -> None:
    vm = domains(vda=["top-a.qcow2", "shared.qcow2"], vdb=["top-b.qcow2", "shared.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    report = assert_agree(vm, "c1", ACCEPTED)
    assert [e["domain"]["disk"] for e in report] == ["vda", "vdb"]
    # The same data as bare QMP: each disk with --top, the shared base no obstacle.
    nodes = libvirtd.virsh("qemu-monitor-command", vm.name, json.dumps(
        {"execute": "query-named-block-nodes", "arguments": {"flat": True}})).stdout
    for entry in report:
        top = entry["chain"][0]["node"]
        run = kbrules("check", "-", "--top", top, "--format", "json", stdin=nodes.encode())
        assert run.code == 0, run.err
        assert [b["name"] for b in run.json()["bitmaps"]] == ["c1"]
    assert_one_line_error(kbrules("check", "-", stdin=nodes.encode()), "2 disks", "--top")


def test_shut_off_domain_read_offline_then_asked(domains: Callable[..., Domain]) -> None:
    vm = domains(vda=["top.qcow2", "base.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    vm.qmp("block-dirty-bitmap-add", node="libvirt-1-format", name="stray", persistent=True)
    vm.destroy()
    offline = kbrules_report(vm)
    assert offline[0]["source"] == "qemu-img" and offline[0]["domain"]["running"] is False
    assert kbrules_answer(offline[0], "c1") == ACCEPTED
    assert first_rule(offline, "stray") == "bitmap-has-checkpoint"
    vm.start()
    assert_agree(vm, "c1", ACCEPTED)


# ------------------------------------------------------------------ the command line

def test_disks_that_are_not_checked_are_said_so(domains: Callable[..., Domain], workdir: Path) -> None:
    vm = domains(vda=["top.qcow2"])
    qemu_img("create", "-q", "-f", "raw", "data.raw", "16M", cwd=workdir)
    libvirtd.virsh("attach-disk", vm.name, str(workdir / "data.raw"), "vdb", "--subdriver", "raw", "--config")
    run = kbrules("check", "--domain", vm.name, "-c", libvirtd.URI, "--format", "jsonl")
    assert run.code == 0, run
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert [e["input"] for e in lines] == [f"{vm.name}/vda", f"{vm.name}/vdb"]
    assert lines[1] == {"input": f"{vm.name}/vdb", "skipped": "a raw image: only qcow2 holds bitmaps"}
    only = kbrules("check", "--domain", vm.name, "-c", libvirtd.URI, "--disk", "vdb")
    assert only.code == 0 and f"== {vm.name}/vdb ==\nskipped: a raw image" in only.out


def test_all_domains_and_unknown_ones(domains: Callable[..., Domain]) -> None:
    vm = domains(vda=["top.qcow2"])
    run = kbrules("check", "--all-domains", "-c", libvirtd.URI, "--format", "jsonl")
    assert f'"input": "{vm.name}/vda"' in run.out
    bad = kbrules("check", "--domain", "kbrules-no-such-domain", "-c", libvirtd.URI, "--format", "jsonl")
    assert bad.code == 2 and "kbrules-no-such-domain" in bad.err
    assert json.loads(bad.out)["error"].startswith("kbrules-no-such-domain: virsh domstate failed")
    disk = kbrules("check", "--domain", vm.name, "-c", libvirtd.URI, "--disk", "vdz")
    assert disk.code == 2 and "no disk 'vdz'" in disk.err


def test_engine_jq_gives_the_same_reports(domains: Callable[..., Domain]) -> None:
    vm = domains(vda=["top.qcow2", "base.qcow2"])
    vm.start()
    vm.checkpoint("c1", "vda")
    vm.qmp("block-dirty-bitmap-add", node="libvirt-1-format", name="stray", persistent=True)
    python = kbrules_report(vm)
    assert kbrules_report(vm, "--engine", "jq") == python
    vm.destroy()
    assert kbrules_report(vm, "--engine", "jq") == kbrules_report(vm)


# ------------------------------------------------------------------ the repair plan

def run_plan(vm: Domain, workdir: Path) -> str:
    """kbrules plan for the domain, run with sh as a person would after reading it."""
    run = kbrules("plan", "--domain", vm.name, "-c", libvirtd.URI)
    assert run.code == 1 and run.err == "", run
    script = workdir / "plan.sh"
    script.write_text(run.out)
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stderr, run.out)
    return run.out


def assert_repaired(vm: Domain, kept: str, gone: str) -> None:
    """Every bitmap left is valid, the healthy checkpoint still serves libvirt, and the
    broken one is gone from libvirt too."""
    after = kbrules("check", "--domain", vm.name, "-c", libvirtd.URI, "--format", "json")
    assert after.code == 0, after.out
    (entry,) = after.json()
    assert {b["name"] for b in entry["bitmaps"]} == {kept}, entry["bitmaps"]
    assert entry["plan"] == []
    assert_agree(vm, kept, ACCEPTED)
    assert_agree(vm, gone, NOT_FOUND)


def test_plan_repairs_a_running_domain(domains: Callable[..., Domain], workdir: Path) -> None:
    vm = domains(vda=["top.qcow2", "base.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    vm.checkpoint("c2")
    vm.qmp("block-dirty-bitmap-disable", node="libvirt-1-format", name="c2")
    vm.qmp("block-dirty-bitmap-add", node="libvirt-1-format", name="stray", persistent=True)
    script = run_plan(vm, workdir)
    # libvirt's commands, through the connection kbrules was given; never qemu-img on
    # the images a running QEMU holds.
    assert f"virsh -c {libvirtd.URI} checkpoint-delete -- {vm.name} c2" in script
    assert "block-dirty-bitmap-remove" in script and "\nqemu-img" not in script
    assert_repaired(vm, "c1", "c2")


def test_plan_repairs_a_shut_off_domain(domains: Callable[..., Domain], workdir: Path) -> None:
    vm = domains(vda=["top.qcow2", "base.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    vm.checkpoint("c2")
    vm.destroy()
    qemu_img("bitmap", "--disable", "top.qcow2", "c2", cwd=workdir)
    script = run_plan(vm, workdir)
    assert f"virsh -c {libvirtd.URI} checkpoint-delete --metadata -- {vm.name} c2" in script
    vm.start()
    assert_repaired(vm, "c1", "c2")


def test_plan_repairs_a_checkpoint_across_a_snapshot(domains: Callable[..., Domain], workdir: Path) -> None:
    # libvirt copies a checkpoint's bitmap into the overlay of a snapshot: the broken
    # bitmap then has copies in two layers, the lower one read-only in QEMU.
    vm = domains(vda=["base.qcow2"])
    vm.start()
    vm.checkpoint("c1")
    vm.snapshot("vda", workdir / "overlay.qcow2")
    vm.checkpoint("c2")
    top = kbrules_report(vm)[0]["chain"][0]["node"]
    vm.qmp("block-dirty-bitmap-disable", node=top, name="c1")
    run_plan(vm, workdir)
    assert_repaired(vm, "c2", "c1")
