"""What an image file is, read in pure Python before qemu-img opens anything.

A guest controls every byte of its disk, and qemu-img follows whatever an image header
names: a backing file (a URL, a ``json:`` option string, a device), an external data
file, vmdk extents. So kbrules reads each layer's header itself first, as QEMU reads
it, and decides what qemu-img may open (``walk``):

- the format of each layer: given (``--image-format``), recorded by the layer above
  (the backing format extension), or found from the first 512 bytes with the same
  magic numbers as QEMU's probing (``probe``); only qcow2 and raw are expected in a
  bitmap chain;
- for qcow2 (``parse_qcow2``): the backing file name and format, the external data
  file, the feature bits, and the bitmap and snapshot counts (a crafted count keeps
  qemu-img busy for minutes).

The tests check every image they make against qemu-img's own reading of it
(tests/test_inspect.py).
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from typing import Optional

from .errors import InputError

QCOW2_MAGIC = b"QFI\xfb"
PROBE_SIZE = 512  # what QEMU reads to probe a format (BLOCK_PROBE_BUF_SIZE)
EXPECTED = ("qcow2", "raw")  # the formats of a bitmap chain

# kbrules' own limits, far above any real chain and far below what QEMU accepts
# (65535 bitmaps, 65536 snapshots): qemu-img info needs 40 s of CPU for a crafted
# image with 65535 bitmaps, and 0.2 s for 4000.
MAX_BITMAPS = 4096
MAX_SNAPSHOTS = 4096

# qcow2 (docs/interop/qcow2.txt in QEMU)
EXT_END, EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_DATA_FILE = 0, 0xE2792ACA, 0x23852875, 0x44415441
INCOMPAT_DATA_FILE = 1 << 2
AUTOCLEAR_BITMAPS = 1 << 0
MAX_BACKING_NAME = 1023


class Refused(InputError):
    """An image names something kbrules does not let qemu-img open."""


class BadHeader(ValueError):
    """A qcow2 header QEMU would refuse to open (the reason is the message)."""


@dataclass(frozen=True)
class Qcow2:
    """The fields of a qcow2 header that decide what qemu-img opens and how long it works."""

    version: int
    cluster_bits: int
    incompatible: int  # feature bits (v3; 0 for v2)
    compatible: int
    autoclear: int
    backing: Optional[bytes]  # the backing file name as stored (None: no backing file)
    backing_format: Optional[str]  # the backing format extension (None: not recorded)
    data_file: Optional[bytes]  # the external data file extension
    snapshots: int
    bitmaps: int  # 0 when the bitmaps extension is absent or not valid (QEMU ignores it)

    @property
    def has_data_file(self) -> bool:
        return bool(self.incompatible & INCOMPAT_DATA_FILE) or self.data_file is not None


def _c_string(raw: bytes) -> bytes:
    """What C code sees of a stored string: up to the first NUL."""
    return raw.split(b"\0", 1)[0]


def qcow2_size(head: bytes) -> int:
    """How many bytes of the file parse_qcow2 needs: the first cluster (header and
    extensions) and a backing file name that may start at its end."""
    if len(head) < 24:
        return 4096
    cluster_bits = struct.unpack_from(">I", head, 20)[0]
    return (1 << min(max(cluster_bits, 9), 21)) + MAX_BACKING_NAME + 1


def parse_qcow2(data: bytes) -> Qcow2:
    """The header of a qcow2 image from its first bytes (qcow2_size of them; missing
    bytes read as zeros, as QEMU reads past the end of a file). Raises BadHeader where
    QEMU's qcow2_do_open refuses the image, so that nothing is read differently."""
    size = max(len(data), 104)
    data = data + b"\0" * (size - len(data))
    if data[:4] != QCOW2_MAGIC:
        raise BadHeader("no qcow2 magic number")
    (version, backing_offset, backing_size, cluster_bits) = struct.unpack_from(">IQII", data, 4)
    if version not in (2, 3):
        raise BadHeader(f"unsupported qcow2 version {version}")
    if not 9 <= cluster_bits <= 21:
        raise BadHeader(f"unsupported cluster size 2^{cluster_bits}")
    cluster = 1 << cluster_bits
    data += b"\0" * max(0, cluster + MAX_BACKING_NAME + 1 - len(data))
    snapshots = struct.unpack_from(">I", data, 60)[0]
    if version == 2:
        incompatible = compatible = autoclear = 0
        header_length = 72
    else:
        incompatible, compatible, autoclear = struct.unpack_from(">QQQ", data, 72)
        header_length = struct.unpack_from(">I", data, 100)[0]
        if header_length < 104:
            raise BadHeader(f"header length {header_length} is too short")
        if header_length > cluster:
            raise BadHeader("the header is larger than a cluster")
    if backing_offset > cluster:
        raise BadHeader("invalid backing file offset")
    backing_format, data_file, bitmaps = _extensions(
        data, header_length, backing_offset or cluster, autoclear)
    backing = None
    if backing_offset:
        if backing_size > min(MAX_BACKING_NAME, cluster - backing_offset):
            raise BadHeader("backing file name too long")
        backing = _c_string(data[backing_offset:backing_offset + backing_size]) or None
    if snapshots > 65536:
        raise BadHeader(f"{snapshots} snapshots (QEMU allows 65536)")
    return Qcow2(version, cluster_bits, incompatible, compatible, autoclear, backing,
                 backing_format, data_file, snapshots, bitmaps)


def _extensions(data: bytes, offset: int, end: int,
                autoclear: int) -> tuple[Optional[str], Optional[bytes], int]:
    """The header extensions between `offset` and `end`, read as qcow2_read_extensions
    reads them (a later extension of a type wins): the backing format, the data file
    name and the bitmap count."""
    backing_format: Optional[str] = None
    data_file: Optional[bytes] = None
    bitmaps = 0
    while offset < end:
        kind, length = struct.unpack_from(">II", data, offset)
        offset += 8
        if offset > end or length > end - offset:
            raise BadHeader("a header extension is too large")
        body = data[offset:offset + length]
        if kind == EXT_END:
            break
        if kind == EXT_BACKING_FORMAT:
            if length >= 16:
                raise BadHeader(f"backing format extension of {length} bytes")
            backing_format = _c_string(body).decode("ascii", "replace")
        elif kind == EXT_DATA_FILE:
            data_file = _c_string(body)
        elif kind == EXT_BITMAPS:
            if length != 24:
                raise BadHeader("bitmaps extension of the wrong size")
            if autoclear & AUTOCLEAR_BITMAPS:  # else QEMU ignores it (and warns)
                count, reserved = struct.unpack_from(">II", body)
                if reserved:
                    raise BadHeader("bitmaps extension: reserved field is not zero")
                if not 1 <= count <= 65535:
                    raise BadHeader(f"bitmaps extension with {count} bitmaps")
                bitmaps = count
        offset += (length + 7) & ~7
    return backing_format, data_file, bitmaps


# QEMU's probes (block/*.c: bdrv_probe), by score: 100 for a magic number, 2 for weak
# signs; raw scores 1 and wins when nothing else does.
_CLOOP = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"


def _vmdk_descriptor(head: bytes) -> bool:
    """vmdk_probe on a text descriptor: comments and blank lines, then 'version=N'."""
    p, end = 0, len(head)
    while p < end:
        if head[p:p + 1] == b"#":
            p = head.find(b"\n", p)
            p = end if p < 0 else p + 1
            continue
        if head[p:p + 1] == b" ":
            while p < end and head[p:p + 1] == b" ":
                p += 1
            if p < end and head[p:p + 1] == b"\r":
                p += 1
            if p == end or head[p:p + 1] != b"\n":
                return False
            p += 1
            continue
        return any(head.startswith(f"version={v}{eol}".encode(), p) for v in "123" for eol in ("\n", "\r\n"))
    return False


def probe(head: bytes, filename: str) -> str:
    """The format QEMU would probe for a file starting with `head` (its first bytes)."""
    buf = head[:PROBE_SIZE].ljust(PROBE_SIZE, b"\0")  # QEMU reads past the end as zeros
    u32be = struct.unpack_from(">I", buf, 4)[0]
    scored = [
        ("qcow2", buf[:4] == QCOW2_MAGIC and u32be >= 2),
        ("qcow", buf[:4] == QCOW2_MAGIC and u32be == 1),
        ("qed", buf[:4] == b"QED\0"),
        ("vmdk", buf[:4] in (b"KDMV", b"COWD") or _vmdk_descriptor(buf)),
        ("vpc", buf[:8] == b"conectix"),
        ("vhdx", buf[:8] == b"vhdxfile"),
        ("vdi", struct.unpack_from("<I", buf, 64)[0] == 0xBEDA107F),
        ("luks", buf[:6] == b"LUKS\xba\xbe" and struct.unpack_from(">H", buf, 6)[0] == 1),
        ("parallels", buf[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt")
         and struct.unpack_from("<I", buf, 16)[0] == 2),
        ("bochs", buf.startswith(b"Bochs Virtual HD Image\0")),
    ]
    scored += [("cloop", buf.startswith(_CLOOP)), ("dmg", len(filename) > 4 and filename.endswith(".dmg"))]
    return next((fmt for fmt, found in scored if found), "raw")


def vmdk_extents(head: bytes) -> list[str]:
    """The file names of the extents a text vmdk descriptor lists (for messages)."""
    names = []
    for line in head.decode("utf-8", "replace").splitlines():
        words = line.split('"')
        if len(words) >= 3 and words[0].split()[:1] in (["RW"], ["RDONLY"], ["NOACCESS"]):
            names.append(words[1])
    return names


def has_protocol(name: str) -> bool:
    """QEMU's path_has_protocol: a ':' before any '/' makes 'proto:rest' a protocol
    (nbd:, http:, json:, fat:, ...), not a file."""
    cut = min((i for i in (name.find(":"), name.find("/")) if i >= 0), default=-1)
    return cut >= 0 and name[cut] == ":"


def looks_like_json(head: bytes) -> bool:
    """Text that starts as a JSON object or array (UTF-8 or UTF-16): a hint that a
    file named as an image was meant as JSON."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            text = head[len(bom):].decode(codec, "ignore")
            break
    else:
        if b"\0" in head:
            return False
        text = head.decode("utf-8", "ignore")
    return text.lstrip()[:1] in ("{", "[")


# The walk over a chain -------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One layer as kbrules found it, before qemu-img opened it."""

    name: str  # the path as qemu-img is given it and prints it
    format: str
    # qemu-img knows the format without probing: the top's is passed with -f, a backing
    # file's is recorded by the layer above it. False: kbrules probed it.
    known: bool
    qcow2: Optional[Qcow2]


@dataclass(frozen=True)
class Plan:
    """What qemu-img may open: the layers, top first. `complete` is False when
    --trust-backing lets the chain go on where kbrules stopped looking (a URL, a
    device, a format other than qcow2 or raw)."""

    images: tuple[Image, ...]
    complete: bool
    json_text: bool = False  # the top is raw and starts like JSON text

    @property
    def probed(self) -> bool:
        """Some backing file has no recorded format: qemu-img would probe it."""
        return not all(image.known for image in self.images)


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))

TRUST_HINT = "(--trust-backing lets qemu-img open it)"
PROBED = "found by its content"


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _read_head(name: str, st: os.stat_result, size: int) -> bytes:
    """The first `size` bytes of a file already stat'ed, opened without blocking (a
    FIFO swapped in after the stat cannot hang kbrules) and checked to be that file."""
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino, stat.S_IFMT(now.st_mode)) != \
                (st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode)):
            raise InputError(f"{name}: replaced while kbrules read it")
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def walk(path: str, image_format: Optional[str] = None, trust_backing: bool = False) -> Plan:
    """The chain of `path` as qemu-img would open it, layer by layer, refused (Refused,
    one line naming the layer and the reason) where an image names something that is
    not a local regular file of format qcow2 or raw. With `trust_backing`, the walk
    stops there instead and qemu-img goes on alone."""
    name = "./" + path if has_protocol(path) else path  # QEMU's own advice for such names
    fmt: Optional[str] = image_format
    how = "given with --image-format"
    images: list[Image] = []
    seen: dict[tuple[int, int], int] = {}
    json_text = False
    while True:
        index = len(images)
        layer = f"layer {index} ({name})" + (f", the backing file of layer {index - 1}," if index else "")
        try:
            found = _layer(path, name, layer, fmt, how, index, seen, trust_backing)
        except OSError as e:
            raise InputError(f"{path}: {layer}: cannot read: {e.strerror or e}") from None
        if found is None:  # trusted: qemu-img goes on from here
            return Plan(tuple(images), False)
        image, head = found
        images.append(image)
        if not index:
            json_text = image.format == "raw" and looks_like_json(head)
        if image.qcow2 is None or image.qcow2.backing is None:
            return Plan(tuple(images), image.format in EXPECTED, json_text)
        backing = os.fsdecode(image.qcow2.backing)
        if has_protocol(backing):
            if trust_backing:
                return Plan(tuple(images), False)
            what = "a json: option string" if backing.startswith("json:") else \
                f"a {backing.split(':', 1)[0]}: protocol or URL"
            raise Refused(f"{path}: layer {index} ({name}) names the backing file {backing!r}, "
                          f"{what}, not a local file: refused {TRUST_HINT}")
        # QEMU's path_combine: relative to the directory of the layer that names it.
        name = backing if backing.startswith("/") else name[:name.rfind("/") + 1] + backing
        fmt, how = image.qcow2.backing_format or None, f"recorded by layer {index}"


def _layer(path: str, name: str, layer: str, fmt: Optional[str], how: str, index: int,
           seen: dict[tuple[int, int], int], trust_backing: bool) -> Optional[tuple[Image, bytes]]:
    """One layer and its first bytes; None where a trusted chain leaves kbrules' sight."""
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise InputError(f"{path}: {layer} does not exist" if index else f"{path}: no such file") from None
    if not (stat.S_ISREG(st.st_mode) or (not index and stat.S_ISBLK(st.st_mode))):
        if not index:
            raise InputError(f"{path}: is {_kind(st.st_mode)}; expected a disk image or a JSON file")
        if trust_backing:
            return None
        raise Refused(f"{path}: {layer} is {_kind(st.st_mode)}, not a regular file: refused {TRUST_HINT}")
    key = (st.st_dev, st.st_ino)
    if key in seen:
        raise InputError(f"{path}: {layer} is layer {seen[key]} again: the backing files form a loop")
    seen[key] = index
    # A raw backing file is never read: its bytes are a guest's, and mean nothing here.
    head = _read_head(name, st, 4096) if fmt != "raw" or not index else b""
    if fmt is None:
        fmt, how = probe(head, name), PROBED
    known = how != PROBED or not index  # the top's format is passed to qemu-img
    if fmt not in EXPECTED:
        if trust_backing:
            return Image(name, fmt, known, None), head
        extents = vmdk_extents(head) if fmt == "vmdk" else []
        listed = f" with extents ({', '.join(map(repr, extents[:3]))})" if extents else ""
        raise Refused(f"{path}: {layer} is a {fmt} image{listed} ({how}); a bitmap chain holds "
                      f"qcow2 and raw images only: refused {TRUST_HINT}")
    qcow2 = None
    if fmt == "qcow2":
        data = head if len(head) >= qcow2_size(head) else _read_head(name, st, qcow2_size(head))
        try:
            qcow2 = parse_qcow2(data)
        except BadHeader as e:
            raise InputError(f"{path}: {layer} is not a valid qcow2 image ({how}): {e}") from None
        _limits(path, layer, qcow2, trust_backing)
    return Image(name, fmt, known, qcow2), head


def _limits(path: str, layer: str, qcow2: Qcow2, trust_backing: bool) -> None:
    if qcow2.has_data_file and not trust_backing:
        named = f" {os.fsdecode(qcow2.data_file)!r}" if qcow2.data_file else ""
        raise Refused(f"{path}: {layer} has an external data file{named}: refused {TRUST_HINT}")
    for count, limit, what in ((qcow2.bitmaps, MAX_BITMAPS, "bitmaps"),
                               (qcow2.snapshots, MAX_SNAPSHOTS, "snapshots")):
        if count > limit:
            raise Refused(f"{path}: {layer} holds {count} {what}, more than kbrules lets qemu-img "
                          f"read ({limit}): a crafted image, or one no tool works with")
