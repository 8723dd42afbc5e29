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

``check_value`` does the same for JSON already parsed (qemu-img info or QMP). Both
take the same rule choice as the command line: rule files, select, ignore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .errors import KbrulesError
from .evaluate import evaluate
from .inputs import from_value, read_input
from .loader import load_rules
from .model import Report
from .report import to_dict

__all__ = ["KbrulesError", "Report", "check_path", "check_value", "to_dict"]


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
