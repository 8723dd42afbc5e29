"""Running qemu-img, and how kbrules runs any other program (virsh too)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Optional

from .errors import InputError, ToolError

TIMEOUT = 120  # seconds; qemu-img reads 2000 layers in about 1 s
LOCKED = 'Failed to get shared "write" lock'


class ImageInUse(InputError):
    """The image is open read-write in a running VM or qemu-nbd."""


@dataclass(frozen=True)
class Ran:
    """What a run of qemu-img (or virsh) gave."""

    stdout: bytes
    stderr: str
    returncode: int


def run_program(argv: list[str], timeout: float) -> Ran:
    """Run a program (an argument list, no shell; LC_ALL=C) to its end, or kill it
    after `timeout` seconds: subprocess.TimeoutExpired. FileNotFoundError when it is
    not installed."""
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False,
                          env={**os.environ, "LC_ALL": "C"})
    return Ran(done.stdout, done.stderr.decode("utf-8", "replace"), done.returncode)


def _run(argv: list[str]) -> Ran:
    try:
        return run_program(argv, TIMEOUT)
    except FileNotFoundError:
        raise ToolError("qemu-img not found: install it (Debian/Ubuntu: apt-get install "
                        "qemu-utils; Fedora/RHEL: dnf install qemu-img)") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"{' '.join(argv)}: no answer after {TIMEOUT} s") from None


def _one_line(stderr: str) -> str:
    return " / ".join(line.strip() for line in stderr.splitlines() if line.strip()) or "(no message)"


def _info_argv(path: str, image_format: Optional[str], force_share: bool, chain: bool) -> list[str]:
    return (["qemu-img", "info", "--output=json"] + (["--backing-chain"] if chain else [])
            + (["-U"] if force_share else []) + (["-f", image_format] if image_format else [])
            + [path])


def info(path: str, image_format: Optional[str] = None,
         force_share: bool = False) -> tuple[bytes, list[str]]:
    """qemu-img info --output=json --backing-chain of an image on disk: its JSON text,
    and qemu-img's warnings (stderr of a run that succeeded)."""
    ran = _run(_info_argv(path, image_format, force_share, chain=True))
    if ran.returncode != 0:
        if LOCKED in ran.stderr:
            raise ImageInUse(
                f"{path}: the image is in use (a running VM or qemu-nbd holds it open "
                f"read-write), so its bitmaps cannot be judged offline; check the live VM: "
                f"virsh qemu-monitor-command DOMAIN '{{\"execute\":\"query-named-block-nodes\","
                f"\"arguments\":{{\"flat\":true}}}}' | kbrules check -  (or add --force-share "
                f"to read it anyway; its in-use flags then mean nothing)")
        raise ToolError(f"{path}: qemu-img info failed (exit {ran.returncode}): {_one_line(ran.stderr)}")
    return ran.stdout, [line.strip() for line in ran.stderr.splitlines() if line.strip()]


def held_rw(filename: str, fmt: str) -> bool:
    """Whether another program may hold this one layer open read-write: a plain
    (locking) read of that layer alone fails. Any failure counts as 'may'."""
    return _run(_info_argv(filename, fmt, force_share=False, chain=False)).returncode != 0
