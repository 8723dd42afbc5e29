"""The chain model every input is normalized to, and what evaluation produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

# Most severe first: findings are ordered by this, and only an error makes a bitmap
# invalid and the exit status 1.
SEVERITIES = ("error", "warning", "info")


def any_error(severities: Iterable[str]) -> bool:
    """Whether any of these findings' severities is an error: the one test of
    "valid" (a bitmap) and of exit status 1 (a report), in every engine."""
    return "error" in severities


@dataclass(frozen=True)
class Bitmap:
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
class Chain:
    source: str  # "qemu-img" or "qmp"
    layers: tuple[Layer, ...]
    # False when the last layer names a backing file that is not in the input.
    complete: bool
    # Read from images with --trust-backing: qemu-img followed what they name, unchecked.
    trust_backing: bool = False


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    layer: int
    filename: str
    message: str
    remediation: str
    caveat: Optional[str] = None


@dataclass(frozen=True)
class Verdict:
    name: str
    valid: bool
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class Report:
    chain: Chain
    rules: tuple[str, ...]  # ids of the rules that ran, in file order
    bitmaps: tuple[Verdict, ...]
    findings: tuple[Finding, ...]  # chain- and layer-level findings

    @property
    def has_error(self) -> bool:
        return any_error(f.severity for f in self.findings) or not all(v.valid for v in self.bitmaps)
