"""kbrules as a Python library, for backup tools written in Python::

    from engine.api import KbrulesError, check_path, to_dict

    try:
        report = check_path("/var/lib/libvirt/images/vm1.qcow2", bitmaps=["daily"])
    except KbrulesError as e:  # bad input, qemu-img failed, broken rules: one line
        ...
    if report.has_error:  # what exit status 1 means on the command line
        for verdict in report.bitmaps:
            print(verdict.name, verdict.valid, [f.rule for f in verdict.findings])
    json_report = to_dict(report)  # the JSON report of README's contract

``check_value`` does the same for JSON already parsed (qemu-img info or QMP), and
``check_domain`` for every disk of a libvirt domain (``kbrules check --domain``). All
take the same rule choice as the command line: rule files, select, ignore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from dataclasses import dataclass

from . import libvirt
from .errors import KbrulesError
from .evaluate import evaluate
from .inputs import from_value, read_input
from .loader import load_rules
from .model import Report
from .report import to_dict

__all__ = ["DiskCheck", "KbrulesError", "Report", "check_domain", "check_path", "check_value",
           "to_dict"]


def check_path(path: Union[str, Path], bitmaps: Optional[Sequence[str]] = None, *,
               rules: Optional[Sequence[Path]] = None, select: Sequence[str] = (),
               ignore: Sequence[str] = (), top: Optional[str] = None,
               image_format: Optional[str] = None, force_share: bool = False,
               trust_backing: bool = False) -> Report:
    """Check a disk image (through qemu-img) or a JSON file (named *.json), as `kbrules
    check PATH`; `trust_backing` as --trust-backing (README: Security)."""
    chosen = load_rules(rules, select, ignore)
    read = read_input(str(path), top=top, image_format=image_format, force_share=force_share,
                      trust_backing=trust_backing)
    return evaluate(read.chain, chosen, bitmaps)


def check_value(value: Any, bitmaps: Optional[Sequence[str]] = None, *,
                rules: Optional[Sequence[Path]] = None, select: Sequence[str] = (),
                ignore: Sequence[str] = (), top: Optional[str] = None) -> Report:
    """Check parsed JSON: qemu-img info --output=json or QMP query-named-block-nodes."""
    chosen = load_rules(rules, select, ignore)
    return evaluate(from_value(value, top=top).chain, chosen, bitmaps)


@dataclass(frozen=True)
class DiskCheck:
    """One disk of a domain: its report, or why it was not checked."""

    disk: str  # DOMAIN/TARGET
    report: Optional[Report] = None
    skipped: Optional[str] = None  # not a disk kbrules checks (not qcow2...)
    error: Optional[str] = None  # could not be read


def check_domain(name: str, *, connect: Optional[str] = None, disks: Sequence[str] = (),
                 rules: Optional[Sequence[Path]] = None, select: Sequence[str] = (),
                 ignore: Sequence[str] = ()) -> list[DiskCheck]:
    """Check every disk of a libvirt domain (or only `disks`), as `kbrules check
    --domain NAME`: a report per disk, with its checkpoints (Report.checkpoints,
    Report.newest_usable)."""
    chosen = load_rules(rules, select, ignore)
    return [DiskCheck(d.name, evaluate(d.input.chain, chosen) if d.input is not None else None,
                      d.skipped, d.error) for d in libvirt.read_domain(name, connect, disks)]
