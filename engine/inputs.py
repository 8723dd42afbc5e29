"""Reading an input into a Chain: an image path (through qemu-img), a JSON file, or
JSON bytes (standard input). The CLI, the Python API, the tests and the docs all read
inputs through here.

Detection, never a guess from the bytes: JSON is standard input (``-``), a file named
``*.json``, or any path when the caller says so (``--json``); every other path is a
disk image, whatever it holds (a note says so when an image looks like JSON text). A
guest writes the bytes of its disk: they must never be able to pass for a report.

JSON is read up to a size limit, and only from a regular file opened without
blocking. An image is first walked by engine/inspect.py (what qemu-img may open, each
layer's format), then read by qemu-img with those formats given, and the chain
qemu-img reports must be the chain kbrules inspected.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Optional, Union

from . import inspect, qemu
from .errors import InputError, ToolError, UsageError
from .model import Chain, Context
from .normalize import normalize, parse_json

STDIN = "-"
MAX_JSON = 32 << 20  # bytes of JSON input: 2000 layers of qemu-img info take 1.9 MB


@dataclass(frozen=True)
class Input:
    """An input read and normalized: what kbrules checks."""

    name: str  # as messages name it: the path, or <stdin>
    value: Any  # the JSON value, read or printed by qemu-img
    chain: Chain
    warnings: tuple[str, ...] = ()  # what qemu-img said on a run that succeeded
    notes: tuple[str, ...] = ()  # kbrules' own hints about the input
    context: Optional[Context] = None  # what else kbrules knows (the jq engine needs it too)


@dataclass(frozen=True)
class Raw:
    """JSON as read, not yet normalized: what the jq engine takes (it refuses bad input
    itself, in check's words)."""

    name: str  # as messages name it: the path, or <stdin>
    value: Any
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    context: Optional[Context] = None


def from_value(value: Any, name: str = "<data>", top: Optional[str] = None) -> Input:
    """An input from parsed JSON (qemu-img info or QMP query-named-block-nodes)."""
    return Input(name, value, normalize(value, name, top))


def from_image(path: str, image_format: Optional[str] = None, force_share: bool = False, *,
               trust_backing: bool = False, timeout: float = qemu.TIMEOUT) -> Input:
    """An input from a disk image, read by qemu-img info with the format of every
    layer given (engine/inspect.py). With force_share, the layers that another
    program may hold read-write are marked. With trust_backing, qemu-img follows
    what the images name (with network) and probes formats itself."""
    plan = inspect.walk(path, image_format, trust_backing)
    top = plan.images[0]
    value: Any
    if trust_backing or not plan.probed:
        text, warnings = qemu.info(top.name, top.format, force_share, label=path,
                                   network=trust_backing, timeout=timeout)
        value = parse_json(text, f"{path}: qemu-img info output")
    else:
        # A backing format qemu-img would probe: one layer at a time, each format given.
        value, warnings = [], []
        for image in plan.images:
            text, said = qemu.info(image.name, image.format, force_share, chain=False,
                                   label=path, timeout=timeout)
            value.append(parse_json(text, f"{path}: qemu-img info output"))
            warnings += said
    _same_chain(path, plan, value)
    # Without --force-share, qemu-img took the image's locks: nobody else writes it.
    context = Context(read_locked=not force_share)
    chain = replace(normalize(value, path, context=context), trust_backing=trust_backing)
    if force_share:
        names = [(i.name, i.format) for i in plan.images]  # exact names, not qemu-img's text
        names += [(l.filename, l.format) for l in chain.layers[len(names):]]
        chain = replace(chain, layers=tuple(
            replace(l, shared_rw=qemu.held_rw(name, fmt, timeout))
            for l, (name, fmt) in zip(chain.layers, names)))
    notes = (f"{path} starts like JSON text but is read as a disk image (a raw one): to read it "
             f"as JSON, name it *.json or add --json",) if plan.json_text else ()
    return Input(path, value, chain, tuple(warnings), notes, context)


def _same_chain(path: str, plan: inspect.Plan, value: Any) -> None:
    """qemu-img must have opened the layers kbrules inspected, with their formats: a
    file replaced in between is an error, never a report."""
    found = value if isinstance(value, list) else [value]
    if len(found) < len(plan.images) or (plan.complete and len(found) != len(plan.images)):
        raise ToolError(f"{path}: qemu-img read {len(found)} layers where kbrules inspected "
                        f"{len(plan.images)}: did the chain change meanwhile?")
    for index, (image, entry) in enumerate(zip(plan.images, found)):
        if not isinstance(entry, dict):
            return  # normalize says what is wrong
        exact = image.name.encode("utf-8", "surrogateescape") == image.name.encode("utf-8", "replace")
        if entry.get("format") != image.format or (exact and entry.get("filename") != image.name):
            raise ToolError(f"{path}: layer {index}: qemu-img read {entry.get('filename')!r} as "
                            f"{entry.get('format')!r} where kbrules inspected {image.name!r} as "
                            f"{image.format!r}: did the chain change meanwhile?")


def is_json(source: str, as_json: bool = False) -> bool:
    """Whether `source` is read as JSON (see the module's doc), not as a disk image."""
    return source == STDIN or as_json or os.path.basename(source).lower().endswith(".json")


def _limited(stream: BinaryIO, where: str, max_bytes: int) -> bytes:
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"{where}: more than {max_bytes} bytes of JSON, the limit "
                         f"(raise it with --max-json-size)")
    return data


def read_json_file(source: str, max_bytes: int = MAX_JSON) -> bytes:
    """A JSON file's bytes: a regular file only (a FIFO or a device is refused before it
    is opened, and opened without blocking in case it was swapped in meanwhile), up to
    `max_bytes`."""
    try:
        st = os.stat(source)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{source}: is a directory; expected a disk image or a JSON file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{source}: not a regular file; JSON is read from a file or from "
                             f"standard input (-)")
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InputError(f"{source}: replaced while kbrules read it")
            return _limited(f, source, max_bytes)
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except PermissionError:
        raise InputError(f"{source}: permission denied") from None
    except OSError as e:
        raise InputError(f"{source}: cannot read: {e.strerror or e}") from None


def read_input(source: str, top: Optional[str] = None, image_format: Optional[str] = None,
               force_share: bool = False, stdin: Optional[BinaryIO] = None, *,
               as_json: bool = False, trust_backing: bool = False, max_json: int = MAX_JSON,
               timeout: float = qemu.TIMEOUT) -> Input:
    """Read `source`: a path, or "-" for JSON on `stdin` (default: sys.stdin). `top`
    picks a QMP top node; `image_format` and `force_share` are qemu-img's -f and -U
    (an image_format also makes the path an image, whatever its name); `as_json` reads
    any path as JSON; `trust_backing` lifts the backing policy (engine/inspect.py)."""
    read = read_raw(source, top, image_format, force_share, stdin, as_json=as_json,
                    trust_backing=trust_backing, max_json=max_json, timeout=timeout)
    return read if isinstance(read, Input) else from_value(read.value, read.name, top)


def read_raw(source: str, top: Optional[str] = None, image_format: Optional[str] = None,
             force_share: bool = False, stdin: Optional[BinaryIO] = None, *,
             as_json: bool = False, trust_backing: bool = False, max_json: int = MAX_JSON,
             timeout: float = qemu.TIMEOUT) -> Union[Input, Raw]:
    """read_input, but JSON is left as parsed (a Raw), for the jq engine; an image is
    read (and normalized) as read_input reads it: qemu-img wrote its JSON."""
    if source == STDIN:
        if image_format:
            raise UsageError("--image-format needs an image path, not -")
        data = _limited(stdin or sys.stdin.buffer, "<stdin>", max_json)
        return Raw("<stdin>", parse_json(data, "<stdin>"))
    if image_format or not is_json(source, as_json):
        if top:
            raise UsageError("--top applies to QMP input, not to an image")
        return from_image(source, image_format, force_share, trust_backing=trust_backing,
                          timeout=timeout)
    return Raw(source, parse_json(read_json_file(source, max_json), source))
