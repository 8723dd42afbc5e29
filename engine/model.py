"""The chain model every input is normalized to, and what evaluation produces."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

# Most severe first: findings are ordered by this, and only an error makes a bitmap
# invalid and the exit status 1.
SEVERITIES = ("error", "warning", "info")


def any_error(severities: Iterable[str]) -> bool:
    """Whether any of these findings' severities is an error: the one test of
    "valid" (a bitmap) and of exit status 1 (a report), in every engine."""
    return "error" in severities


@dataclass(frozen=True)
class Bitmap:
    """One copy of a bitmap, in one layer."""

    name: str
    recording: bool
    inconsistent: bool
    persistent: bool
    busy: bool
    granularity: Optional[int]


@dataclass(frozen=True)
class Layer:
    """One image of the chain; layer 0 is the top."""

    layer: int
    filename: str
    format: str
    node: Optional[str]  # QMP node-name; None for qemu-img input
    compat: Optional[str]  # qcow2 "1.1" / "0.10"; None for other formats
    backing: Optional[str]  # the backing file, resolved as qemu opens it
    bitmaps: tuple[Bitmap, ...]
    backing_format: Optional[str] = None  # None: not recorded, qemu probes it
    backing_recorded: Optional[str] = None  # the name as written in the image (maybe relative)
    corrupt: Optional[bool] = None  # qcow2 'corrupt' flag; None for other formats
    dirty: bool = False  # qcow2 dirty flag (unclean shutdown with lazy refcounts)
    # Read with --force-share while another program may hold it read-write:
    # its in-use flags then say nothing about the bitmaps' health.
    shared_rw: bool = False


@dataclass(frozen=True)
class CheckpointDisk:
    """One disk entry of a libvirt checkpoint (virsh checkpoint-dumpxml)."""

    name: str  # the disk's target, e.g. vda
    checkpoint: str  # "bitmap": a bitmap tracks it; "no": the checkpoint leaves it out
    bitmap: Optional[str]  # the bitmap's name, when checkpoint is "bitmap"


@dataclass(frozen=True)
class Checkpoint:
    """A libvirt checkpoint: libvirt's record that a bitmap of its name tracks writes
    since then. An incremental backup can start only from a checkpoint."""

    name: str
    created: int  # creationTime, seconds since the epoch
    parent: Optional[str]
    disks: tuple[CheckpointDisk, ...]


@dataclass(frozen=True)
class Domain:
    """The libvirt domain and disk a chain belongs to."""

    name: str
    disk: str  # the disk's target, e.g. vda
    running: bool  # read live over QMP; else offline, by qemu-img
    disks: tuple[str, ...]  # every disk target the domain has now
    checkpoints: tuple[Checkpoint, ...]  # oldest first
    connect: Optional[str] = None  # the libvirt URI it was read through (virsh -c), if not the default


@dataclass(frozen=True)
class Context:
    """What kbrules knows about an input besides its JSON: the libvirt domain and disk
    it belongs to, that disk's QMP format nodes (top first, from the domain's XML), and
    whether kbrules read the image itself with qemu-img's locks. The jq program takes
    the same as --argjson context (to_json)."""

    domain: Optional[Domain] = None
    nodes: Optional[tuple[str, ...]] = None
    read_locked: bool = False

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


# Whose commands a remediation gives, by where the data came from (see
# Chain.advice), each with how the docs and `kbrules explain` name it.
ADVICE = {"image": "an image on disk (qemu-img)", "qmp": "a running QEMU, over QMP",
          "libvirt": "a libvirt domain (virsh)"}


@dataclass(frozen=True)
class Chain:
    """A disk's backing chain, top first, as every input is normalized."""

    source: str  # "qemu-img" or "qmp"
    layers: tuple[Layer, ...]
    # False when the last layer names a backing file that is not in the input.
    complete: bool
    # Read from images with --trust-backing: qemu-img followed what they name, unchecked.
    trust_backing: bool = False
    domain: Optional[Domain] = None
    # kbrules ran qemu-img on the image itself, with its locks: no other program had
    # it open read-write, so its in-use flags are the truth.
    read_locked: bool = False

    @property
    def advice(self) -> str:
        """Whose commands fit this chain's remediations (one of ADVICE)."""
        return "libvirt" if self.domain is not None else "qmp" if self.source == "qmp" else "image"


@dataclass(frozen=True)
class Finding:
    """A rule that failed on a subject, at a layer: what it says and what to do."""

    rule: str
    severity: str
    layer: int
    filename: str
    message: str
    remediation: str
    caveat: Optional[str] = None
    # The commands in `remediation`, each as it stands there, for a reader to copy:
    # the text report puts each on a line of its own. Not in the JSON report.
    commands: tuple[str, ...] = ()
    # The same commands as words (argv), for the repair plan to run.
    argv: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Verdict:
    """Whether an incremental backup can start from a bitmap, and why not."""

    name: str
    valid: bool
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class CheckpointVerdict:
    """Whether an incremental backup of this disk can start from a checkpoint now: it
    covers the disk, no rule of severity error finds fault with it, and its bitmap is
    valid (the bitmap's own findings are under the report's bitmaps)."""

    name: str
    bitmap: Optional[str]  # its bitmap for this disk; None when it does not cover it
    usable: bool
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class Report:
    """What checking a chain gives: the JSON report's content (report.to_dict)."""

    chain: Chain
    rules: tuple[str, ...]  # ids of the rules that ran, in file order
    bitmaps: tuple[Verdict, ...]
    findings: tuple[Finding, ...]  # chain- and layer-level findings
    checkpoints: tuple[CheckpointVerdict, ...] = ()  # a libvirt disk's, oldest first

    @property
    def newest_usable(self) -> Optional[str]:
        """The newest checkpoint an incremental backup can start from now."""
        usable = [c.name for c in self.checkpoints if c.usable]
        return usable[-1] if usable else None

    @property
    def has_error(self) -> bool:
        return (any_error(f.severity for f in self.findings) or not all(v.valid for v in self.bitmaps)
                or any_error(f.severity for c in self.checkpoints for f in c.findings))
