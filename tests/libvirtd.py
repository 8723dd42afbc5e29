"""A real libvirtd for the tests and the articles, and TCG domains to run in it.

No systemd here: virtlogd and libvirtd are started as daemons (`-d`) when none
answers, once per test run, and stopped by their PIDs at the end (a daemon that was
already running is left alone). Domains need no OS: 64 MiB, TCG, no network, qcow2
disks in a directory that the libvirt-qemu user can read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

URI = "qemu:///system"
STARTUP = 120  # seconds: libvirtd's first start probes QEMU's capabilities (about 13 s)
PIDFILES = {"virtlogd": Path("/run/virtlogd.pid"), "libvirtd": Path("/run/libvirtd.pid")}


def missing() -> Optional[str]:
    """Why a real libvirt cannot run here, or None."""
    for tool in ("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install libvirt-daemon-system " \
                   f"libvirt-clients qemu-system-x86)"
    if os.geteuid() != 0:
        return "libvirtd's system instance needs root"
    return None


def virsh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid(name: str) -> Optional[int]:
    try:
        pid = int(PIDFILES[name].read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


class Daemons:
    """virtlogd and libvirtd, started if they are not running; stop() ends only those
    this process started."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []

    def answering(self) -> bool:
        try:  # `virsh version` asks QEMU too and takes seconds; this does not
            return virsh("uri", check=False, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def ensure(self) -> None:
        if self.answering():
            return
        for name in ("virtlogd", "libvirtd"):
            if _pid(name) is None:
                subprocess.run([name, "-d"], check=True, timeout=30)
                deadline = time.monotonic() + 10
                while _pid(name) is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                pid = _pid(name)
                if pid is None:
                    raise RuntimeError(f"{name} -d started no daemon (no {PIDFILES[name]})")
                self.started.append((name, pid))
        deadline = time.monotonic() + STARTUP
        while not self.answering():
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not answer within {STARTUP} s")
            time.sleep(0.5)

    def stop(self) -> None:
        for _, pid in reversed(self.started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20  # libvirtd 11 was seen taking over 15 s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.started.clear()


def images_dir() -> Path:
    """A directory the libvirt-qemu user can enter (pytest's tmp_path cannot be)."""
    path = Path(tempfile.mkdtemp(prefix="kbrules-libvirt-"))
    path.chmod(0o755)
    return path


def qemu_img(*args: str, cwd: Path) -> str:
    done = subprocess.run(["qemu-img", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"qemu-img {' '.join(args)}: {done.stderr}"
    return done.stdout


DISK = """    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{path}'/>
      <target dev='{target}' bus='virtio'/>
    </disk>"""

DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
{disks}
    <memballoon model='none'/>
  </devices>
</domain>"""


@dataclass
class Domain:
    """A TCG domain with qcow2 disks (target -> top image); undefined by close()."""

    directory: Path
    disks: dict[str, Path]
    name: str = field(default_factory=lambda: f"kbrules-test-{uuid.uuid4().hex[:8]}")

    def define(self) -> "Domain":
        xml = DOMAIN.format(name=self.name, disks="\n".join(
            DISK.format(path=path, target=target) for target, path in self.disks.items()))
        path = self.directory / f"{self.name}.xml"
        path.write_text(xml)
        virsh("define", str(path))
        return self

    def start(self) -> None:
        virsh("start", self.name)

    def destroy(self) -> None:
        virsh("destroy", self.name, check=False)

    def running(self) -> bool:
        return virsh("domstate", self.name).stdout.strip() == "running"

    def qmp(self, command: str, **arguments: Any) -> Any:
        message = {"execute": command, **({"arguments": arguments} if arguments else {})}
        reply = json.loads(virsh("qemu-monitor-command", self.name, json.dumps(message)).stdout)
        return reply["return"]

    def checkpoint(self, name: str, *diskspec: str) -> None:
        virsh("checkpoint-create-as", self.name, name, *[a for d in diskspec for a in ("--diskspec", d)])

    def snapshot(self, disk: str, overlay: Path) -> None:
        """An external disk-only snapshot: `overlay` becomes the disk's top image."""
        virsh("snapshot-create-as", self.name, "--disk-only", "--no-metadata",
              "--diskspec", f"{disk},file={overlay}")

    def redefine_checkpoint(self, name: str, disks: Sequence[str], created: int) -> None:
        """libvirt's record of a checkpoint whose bitmaps are already in the images."""
        xml = (f"<domaincheckpoint><name>{name}</name><creationTime>{created}</creationTime><disks>"
               + "".join(f"<disk name='{d}' checkpoint='bitmap' bitmap='{name}'/>" for d in disks)
               + "</disks></domaincheckpoint>")
        path = self.directory / f"{self.name}-{name}.xml"
        path.write_text(xml)
        virsh("checkpoint-create", self.name, str(path), "--redefine")

    def backup(self, incremental: str, targets: Optional[Sequence[str]] = None) -> subprocess.CompletedProcess[str]:
        """libvirt's own answer: virsh backup-begin of these disks (default: all),
        push mode to new qcow2 files, incremental from a checkpoint."""
        wanted = list(self.disks) if targets is None else list(targets)
        stamp = uuid.uuid4().hex[:6]
        disks = "".join(
            f"<disk name='{t}' type='file'><target file='{self.directory}/backup-{stamp}-{t}.qcow2'/>"
            f"<driver type='qcow2'/></disk>" if t in wanted else f"<disk name='{t}' backup='no'/>"
            for t in self.disks)
        xml = (f"<domainbackup mode='push'><incremental>{incremental}</incremental>"
               f"<disks>{disks}</disks></domainbackup>")
        path = self.directory / f"{self.name}-backup-{stamp}.xml"
        path.write_text(xml)
        done = virsh("backup-begin", self.name, str(path), check=False)
        if done.returncode == 0:
            self.wait_for_job()
        return done

    def pull_backup(self, incremental: str, sockets: Path) -> None:
        """A pull-mode backup: its job stays open until abort_job()."""
        disks = "".join(f"<disk name='{t}' backup='yes' type='file'><scratch file='{sockets}/scratch-{t}.qcow2'/></disk>"
                        for t in self.disks)
        xml = (f"<domainbackup mode='pull'><incremental>{incremental}</incremental>"
               f"<server transport='unix' socket='{sockets}/nbd.sock'/><disks>{disks}</disks></domainbackup>")
        path = self.directory / f"{self.name}-pull.xml"
        path.write_text(xml)
        virsh("backup-begin", self.name, str(path))

    def wait_for_job(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while "Job type:         None" not in virsh("domjobinfo", self.name).stdout:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: the backup job did not end in {timeout} s")
            time.sleep(0.1)

    def abort_job(self) -> None:
        virsh("domjobabort", self.name, check=False)

    def qemu_pid(self) -> int:
        return int(Path(f"/run/libvirt/qemu/{self.name}.pid").read_text().split()[0])

    def close(self) -> None:
        self.abort_job()
        self.destroy()
        virsh("undefine", self.name, "--checkpoints-metadata", "--snapshots-metadata", check=False)


# The daemons of this test run: started by the first test or article that needs them,
# stopped at the end of the run (tests/conftest.py, docs/conftest.py).
DAEMONS = Daemons()
