"""Reading a libvirt domain through virsh: its disks, each disk's chain (live over QMP
when the domain runs, else offline with qemu-img), and its checkpoints.

Only `virsh` is run (argument lists, no shell, a timeout, `-c URI`), so nothing needs
compiling on the host. A running domain's disk chain is the one its live XML names:
libvirt gives each image of a disk an index (``<source index='1'/>``, ``<backingStore
index='2'>``) and names its QMP format node ``libvirt-INDEX-format``; so a backup job's
nodes, and a base file that two disks share, never confuse one disk with another.
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .errors import InputError, KbrulesError, ToolError, ToolTimeout
from .inputs import Input, from_image
from .model import Checkpoint, CheckpointDisk, Context, Domain
from .normalize import normalize, parse_json
from .qemu import run_program
from .text import show

TIMEOUT = 60  # seconds for one virsh call
PARALLEL = 8  # virsh calls at once for one domain
QUERY_NODES = json.dumps({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
LIVE_STATES = ("running", "paused", "in shutdown", "pmsuspended")  # a QEMU process to ask


def virsh(args: Sequence[str], connect: Optional[str] = None) -> str:
    """virsh's output, or a KbrulesError with its first line of complaint."""
    argv = ["virsh", *(["-c", connect] if connect else []), *args]
    try:
        done = run_program(argv, TIMEOUT)
    except FileNotFoundError:
        raise ToolError("virsh not found: install it (Debian/Ubuntu: apt-get install "
                        "libvirt-clients; Fedora/RHEL: dnf install libvirt-client)") from None
    except subprocess.TimeoutExpired:
        raise ToolTimeout(f"virsh {args[0]}: no answer after {TIMEOUT} s") from None
    if done.returncode != 0:
        # Each line says more: "failed to connect to the hypervisor", then the socket.
        why = "; ".join(line.strip().removeprefix("error: ") for line in done.stderr.splitlines()
                        if line.strip()) or "(no message)"
        raise ToolError(f"virsh {args[0]} failed: {show(why)}")
    return done.stdout.decode("utf-8", "replace")


@dataclass(frozen=True)
class Disk:
    """A disk of the domain's XML."""

    target: str  # vda
    device: str  # disk, cdrom, floppy, lun
    type: str  # file, block, network, volume...
    format: Optional[str]  # the driver's type: qcow2, raw...
    path: Optional[str]  # a file or block device; None for other types
    indices: tuple[int, ...]  # libvirt's index of each image, top first (live XML only)


def parse_disks(text: str, where: str) -> list[Disk]:
    """The disks of a domain XML (virsh dumpxml)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise InputError(f"{where}: virsh dumpxml: not XML ({e})") from None
    disks = []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        if target is None or not target.get("dev"):
            continue
        driver, source = disk.find("driver"), disk.find("source")
        path = None if source is None else source.get("file") or source.get("dev")
        indices: list[int] = []
        index = None if source is None else source.get("index")
        store = disk.find("backingStore")
        while index is not None and index.isdigit():
            indices.append(int(index))
            index = None if store is None else store.get("index")
            store = None if store is None else store.find("backingStore")
        disks.append(Disk(target.get("dev", ""), disk.get("device", "disk"), disk.get("type", "file"),
                          None if driver is None else driver.get("type"), path, tuple(indices)))
    return disks


def parse_checkpoint(text: str, where: str) -> Checkpoint:
    """One checkpoint (virsh checkpoint-dumpxml --no-domain)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise InputError(f"{where}: virsh checkpoint-dumpxml: not XML ({e})") from None
    created = root.findtext("creationTime", "0").strip()
    return Checkpoint(name=root.findtext("name", "").strip(),
                      created=int(created) if created.isdigit() else 0,
                      parent=(root.findtext("parent/name") or "").strip() or None,
                      disks=tuple(CheckpointDisk(d.get("name", ""), d.get("checkpoint", "bitmap"),
                                                 d.get("bitmap")) for d in root.findall("./disks/disk")))


def _checkpoints(domain: str, connect: Optional[str], names: Sequence[str],
                 pool: ThreadPoolExecutor) -> tuple[Checkpoint, ...]:
    """The domain's checkpoints of these names (checkpoint-list), read at once, oldest
    first (by creation time, then parents first)."""
    found = list(pool.map(lambda n: parse_checkpoint(
        virsh(["checkpoint-dumpxml", "--no-domain", "--", domain, n], connect), f"{domain}: {n}"), names))
    order = {c.name: i for i, c in enumerate(found)}
    return tuple(sorted(found, key=lambda c: (c.created, order[c.name])))


@dataclass(frozen=True)
class DiskRead:
    """What reading one disk of a domain gave: an input to check, or why not."""

    name: str  # DOMAIN/TARGET
    input: Optional[Input] = None
    skipped: Optional[str] = None  # why this disk is not checked (not an error)
    error: Optional[str] = None  # why it could not be read (exit 2)
    reason: Optional[str] = None  # of a skip or error, in one word: SKIP_REASONS, KbrulesError.reason


# Why a disk is not checked, in one word each (the Prometheus format's reason label).
SKIP_REASONS = ("not_a_disk", "not_qcow2", "no_node_index", "needs_running_domain")


def read_domain(name: str, connect: Optional[str] = None,
                targets: Sequence[str] = ()) -> list[DiskRead]:
    """Every disk of a domain (or only `targets`), read as kbrules checks it. Raises a
    KbrulesError when the domain itself cannot be read."""
    # Every virsh call only reads, and each is mostly virsh starting: those that need
    # not wait for another run at once. Their errors are reported in this order.
    try:
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            state = pool.submit(virsh, ["domstate", "--", name], connect)
            xml = pool.submit(virsh, ["dumpxml", "--", name], connect)
            listed = pool.submit(virsh, ["checkpoint-list", "--name", "--topological", "--", name], connect)
            live = state.result().strip().splitlines()[0].strip() in LIVE_STATES
            disks = parse_disks(xml.result(), name)
            unknown = [t for t in targets if t not in {d.target for d in disks}]
            if unknown:
                raise InputError(f"{name}: no disk {unknown[0]!r} (the domain has "
                                 f"{', '.join(d.target for d in disks) or 'no disks'})")
            query = pool.submit(virsh, ["qemu-monitor-command", "--", name, QUERY_NODES], connect) if live else None
            points = _checkpoints(name, connect, listed.result().split(), pool)
            nodes: Any = None
            if query is not None:
                nodes = parse_json(query.result().encode(), f"{name}: query-named-block-nodes")
    except ToolError as e:  # virsh's complaint, with the domain it was about
        raise type(e)(f"{name}: {e}") from None
    all_targets = tuple(d.target for d in disks if d.device == "disk")
    out = []
    for disk in disks:
        if targets and disk.target not in targets:
            continue
        where = f"{name}/{disk.target}"
        domain = Domain(name, disk.target, live, all_targets, points, connect)
        try:
            out.append(_read_disk(disk, where, domain, nodes))
        except KbrulesError as e:
            out.append(DiskRead(where, error=str(e), reason=e.reason))
    return out


def _read_disk(disk: Disk, where: str, domain: Domain, nodes: Any) -> DiskRead:
    if disk.device != "disk":
        return DiskRead(where, skipped=f"a {disk.device}, not a disk", reason="not_a_disk")
    if disk.format != "qcow2":
        return DiskRead(where, skipped=f"a {disk.format or 'unknown'} image: only qcow2 holds bitmaps",
                        reason="not_qcow2")
    if nodes is not None:
        if not disk.indices:
            return DiskRead(where, skipped="the domain's XML gives no node index for it "
                                           "(libvirt before 5.10?): check it with QMP data and --top",
                            reason="no_node_index")
        context = Context(domain, tuple(f"libvirt-{i}-format" for i in disk.indices))
        return DiskRead(where, Input(where, nodes, normalize(nodes, where, context=context), context=context))
    if disk.type not in ("file", "block") or disk.path is None:
        return DiskRead(where, skipped=f"a {disk.type} disk: kbrules reads it only from the "
                                       f"running domain, over QMP", reason="needs_running_domain")
    read = from_image(disk.path, "qcow2")
    context = Context(domain, read_locked=True)
    chain = normalize(read.value, disk.path, context=context)
    return DiskRead(where, Input(where, read.value, chain, read.warnings, read.notes, context))


def all_domains(connect: Optional[str] = None) -> list[str]:
    """Every domain libvirt knows, running or not."""
    return [line.strip() for line in virsh(["list", "--all", "--name"], connect).splitlines() if line.strip()]
