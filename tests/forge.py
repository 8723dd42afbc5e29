"""Hostile images, as a guest or a careless admin makes them: real images from
qemu-img, then their header rewritten in place, as an attacker would (a guest owns the
bytes of its disk). Each forge returns the path it made.

The qcow2 layout (QEMU's docs/interop/qcow2.txt): a header, header extensions (type,
length, data padded to 8 bytes, ending with type 0), then the backing file name; all
within the first cluster. ``rewrite`` lays that area out anew.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Optional, Sequence

EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_DATA_FILE = 0xE2792ACA, 0x23852875, 0x44415441
KEEP = object()


def qemu_img(*args: str, cwd: Optional[Path] = None) -> str:
    done = subprocess.run(["qemu-img", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"qemu-img {' '.join(args)}: {done.stderr}"
    return done.stdout


def qcow2(path: Path, backing: Optional[str] = None, backing_format: Optional[str] = "qcow2",
          size: str = "1M") -> Path:
    """A qcow2 image made by qemu-img; its backing file, whatever it names, is written
    without being opened (-u)."""
    args = ["create", "-q", "-f", "qcow2"]
    if backing is not None:
        args += ["-u", "-b", backing] + (["-F", backing_format] if backing_format else [])
    qemu_img(*args, str(path), size)
    return path


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from(">I", data, offset)[0])


def extensions(path: Path) -> list[tuple[int, bytes]]:
    data = path.read_bytes()
    offset = _u32(data, 100) if _u32(data, 4) == 3 else 72
    found = []
    while True:
        kind, length = struct.unpack_from(">II", data, offset)
        if kind == 0:
            return found
        found.append((kind, data[offset + 8:offset + 8 + length]))
        offset += 8 + ((length + 7) & ~7)


def rewrite(path: Path, exts: Optional[Sequence[tuple[int, bytes]]] = None,
            backing: object = KEEP, incompatible: Optional[int] = None,
            autoclear: Optional[int] = None) -> Path:
    """Lay out the extensions and the backing file name of a qcow2 image anew (v3)."""
    data = bytearray(path.read_bytes())
    if exts is None:
        exts = extensions(path)
    if backing is KEEP:
        offset, size = struct.unpack_from(">QI", data, 8)
        backing = bytes(data[offset:offset + size]) if offset else None
    start = _u32(data, 100)
    area = b"".join(struct.pack(">II", k, len(v)) + v + b"\0" * ((-len(v)) % 8) for k, v in exts)
    area += b"\0" * 8  # the end of the extensions
    name_at = start + len(area)
    assert isinstance(backing, (bytes, type(None)))
    cluster = 1 << _u32(data, 20)
    assert name_at + len(backing or b"") <= cluster
    data[start:cluster] = area + (backing or b"") + b"\0" * (cluster - name_at - len(backing or b""))
    struct.pack_into(">QI", data, 8, name_at if backing is not None else 0, len(backing or b""))
    if incompatible is not None:
        struct.pack_into(">Q", data, 72, incompatible)
    if autoclear is not None:
        struct.pack_into(">Q", data, 88, autoclear)
    path.write_bytes(bytes(data))
    return path


def without_backing_format(path: Path) -> Path:
    """An overlay as QEMU before 5.1 wrote it: its backing file's format not recorded."""
    return rewrite(path, [e for e in extensions(path) if e[0] != EXT_BACKING_FORMAT])


def with_backing(path: Path, backing: bytes, backing_format: Optional[bytes] = None) -> Path:
    """Any bytes as the backing file name (and format), as a guest can write them."""
    exts = [e for e in extensions(path) if e[0] != EXT_BACKING_FORMAT]
    if backing_format is not None:
        exts.append((EXT_BACKING_FORMAT, backing_format))
    return rewrite(path, exts, backing=backing)


def with_data_file(path: Path, name: bytes) -> Path:
    """An external data file named in the header (incompatible feature bit 2)."""
    incompatible = struct.unpack_from(">Q", path.read_bytes(), 72)[0] | 4
    return rewrite(path, extensions(path) + [(EXT_DATA_FILE, name)], incompatible=incompatible)


def many_bitmaps(path: Path, count: int) -> Path:
    """A qcow2 image whose bitmap directory holds `count` bitmaps: one real bitmap made
    by qemu-img, copied under new names (qemu-img info spends 40 s of CPU on 65535)."""
    qcow2(path)
    qemu_img("bitmap", "--add", str(path), "b0")
    data = bytearray(path.read_bytes())
    ext = next(v for k, v in extensions(path) if k == EXT_BITMAPS)
    _, _, size, offset = struct.unpack(">IIQQ", ext)
    first = bytes(data[offset:offset + size])
    table, table_size, flags, kind, granularity = struct.unpack_from(">QIIBB", first)
    directory = bytearray()
    for i in range(count):
        name = b"b%05d" % i
        entry = struct.pack(">QIIBBHI", table, table_size, flags, kind, granularity, len(name), 0) + name
        directory += entry + b"\0" * ((-len(entry)) % 8)
    cluster = 1 << _u32(data, 20)
    at = -(-len(data) // cluster) * cluster
    data += b"\0" * (at - len(data)) + directory + b"\0" * ((-len(directory)) % cluster)
    path.write_bytes(bytes(data))
    exts = [(k, struct.pack(">IIQQ", count, 0, len(directory), at) if k == EXT_BITMAPS else v)
            for k, v in extensions(path)]
    return rewrite(path, exts)


def many_snapshots(path: Path, count: int) -> Path:
    """A qcow2 image whose snapshot table lists `count` copies of one real snapshot."""
    qcow2(path)
    qemu_img("snapshot", "-c", "s0", str(path))
    data = bytearray(path.read_bytes())
    _, offset = struct.unpack_from(">IQ", data, 60)
    l1, l1_size, _, _, sec, nsec, clock, state, extra_size = struct.unpack_from(">QIHHIIQII", data, offset)
    extra = bytes(data[offset + 40:offset + 40 + extra_size])
    table = bytearray()
    for i in range(count):
        ident, name = b"%d" % (i + 1), b"s%05d" % i
        entry = struct.pack(">QIHHIIQII", l1, l1_size, len(ident), len(name), sec, nsec, clock, state,
                            extra_size) + extra + ident + name
        table += entry + b"\0" * ((-len(entry)) % 8)
    cluster = 1 << _u32(data, 20)
    at = -(-len(data) // cluster) * cluster
    data += b"\0" * (at - len(data)) + table + b"\0" * ((-len(table)) % cluster)
    struct.pack_into(">IQ", data, 60, count, at)
    path.write_bytes(bytes(data))
    return path


def raw_with_qcow2_inside(path: Path, backing: str, backing_format: Optional[str] = "raw",
                          size: int = 4 << 20) -> Path:
    """A raw disk whose guest wrote a whole small qcow2 image (header, tables) at its
    start: probed, it is a qcow2 image naming `backing`."""
    inner = path.with_name(path.name + ".inner.qcow2")
    qcow2(inner, backing, backing_format)
    data = inner.read_bytes()
    inner.unlink()
    with path.open("wb") as f:
        f.write(data)
        f.truncate(max(size, len(data)))
    return path


def vmdk_with_extent(path: Path, extent: str) -> Path:
    """A vmdk descriptor made by qemu-img (monolithicFlat), its extent pointed elsewhere
    (the CVE-2022-47951 pattern)."""
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(path), "1M")
    text = path.read_text()
    flat = path.with_name(path.stem + "-flat.vmdk")
    path.write_text(text.replace(f'"{flat.name}"', f'"{extent}"'))
    flat.unlink()
    return path
