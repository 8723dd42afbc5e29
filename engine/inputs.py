"""Reading an input into a Chain: an image path (through qemu-img), a JSON file, or
JSON bytes (standard input). The CLI, the Python API, the tests and the docs all read
inputs through here.

Detection: a path is a disk image unless it holds JSON text: a qcow2 image starts with
its magic number and a raw image has NUL bytes, which JSON text never holds; a
``.json`` suffix or a UTF-16 byte order mark means JSON. Which JSON it is (qemu-img
info or QMP) is decided by engine.normalize.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Optional

from . import qemu
from .errors import InputError, UsageError
from .model import Chain, Context
from .normalize import UTF16_BOMS, normalize, parse_json

QCOW2_MAGIC = b"QFI\xfb"
STDIN = "-"


@dataclass(frozen=True)
class Input:
    name: str  # as messages name it: the path, or <stdin>
    value: Any  # the JSON value, read or printed by qemu-img
    chain: Chain
    warnings: tuple[str, ...] = ()  # what qemu-img said on a run that succeeded
    context: Optional[Context] = None  # what else kbrules knows (the jq engine needs it too)


@dataclass(frozen=True)
class Raw:
    """An input as read, not yet normalized: what the jq engine takes (it refuses bad
    input itself, with the same messages)."""

    name: str
    value: Any
    warnings: tuple[str, ...] = ()
    context: Optional[Context] = None
    shared: bool = False  # an image read with qemu-img -U (--force-share)


def normalized(raw: Raw, top: Optional[str] = None) -> Input:
    """The input with its chain. With --force-share, the layers that another program may
    hold read-write are marked."""
    chain = normalize(raw.value, raw.name, top, raw.context)
    if raw.shared:
        chain = replace(chain, layers=tuple(
            replace(l, shared_rw=qemu.held_rw(l.filename, l.format)) for l in chain.layers))
    return Input(raw.name, raw.value, chain, raw.warnings, raw.context)


def from_value(value: Any, name: str = "<data>", top: Optional[str] = None) -> Input:
    """An input from parsed JSON (qemu-img info or QMP query-named-block-nodes)."""
    return normalized(Raw(name, value), top)


def from_bytes(data: bytes, name: str, top: Optional[str] = None) -> Input:
    """An input from JSON text."""
    return from_value(parse_json(data, name), name, top)


def _image(path: str, image_format: Optional[str], force_share: bool) -> Raw:
    text, warnings = qemu.info(path, image_format, force_share)
    value = parse_json(text, f"{path}: qemu-img info output")
    # Without --force-share, qemu-img took the image's locks: nobody else writes it.
    return Raw(path, value, tuple(warnings), Context(read_locked=not force_share), force_share)


def from_image(path: str, image_format: Optional[str] = None, force_share: bool = False) -> Input:
    """An input from a disk image, read by qemu-img info --backing-chain. With
    force_share, the layers that another program may hold read-write are marked."""
    return normalized(_image(path, image_format, force_share))


def is_json_file(path: Path) -> bool:
    """Whether a file holds JSON text rather than a disk image (see the module's doc)."""
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(QCOW2_MAGIC):
        return False
    if path.suffix.lower() == ".json" or head.startswith(UTF16_BOMS):  # UTF-16 text: not an image
        return True
    return b"\0" not in head


def read_input(source: str, top: Optional[str] = None, image_format: Optional[str] = None,
               force_share: bool = False, stdin: Optional[BinaryIO] = None) -> Input:
    """Read `source`: a path, or "-" for JSON on `stdin` (default: sys.stdin). `top`
    picks a QMP top node; `image_format` and `force_share` are qemu-img's -f and -U
    (an image_format also makes the path an image, whatever its content)."""
    return normalized(read_raw(source, top, image_format, force_share, stdin), top)


def read_raw(source: str, top: Optional[str] = None, image_format: Optional[str] = None,
             force_share: bool = False, stdin: Optional[BinaryIO] = None) -> Raw:
    """read_input without the normalization: the JSON value as read (parsed, or printed
    by qemu-img for an image)."""
    if source == STDIN:
        if image_format:
            raise UsageError("--image-format needs an image path, not -")
        data = (stdin or sys.stdin.buffer).read()
        return Raw("<stdin>", parse_json(data, "<stdin>"))
    path = Path(source)
    try:
        if path.is_dir():
            raise InputError(f"{source}: is a directory; expected a disk image or a JSON file")
        if not path.exists():
            raise InputError(f"{source}: no such file")
        if image_format or not is_json_file(path):
            if top:
                raise UsageError("--top applies to QMP input, not to an image")
            return _image(source, image_format, force_share)
        data = path.read_bytes()
    except PermissionError:
        raise InputError(f"{source}: permission denied") from None
    except OSError as e:
        raise InputError(f"{source}: cannot read: {e.strerror or e}") from None
    return Raw(source, parse_json(data, source))
