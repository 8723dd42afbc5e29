"""Builders of the JSON that kbrules reads, as qemu-img and QEMU print it: one place
for every test that writes input by hand (real images are made in helpers.py).

qemu-img info --output=json: ``layer(...)`` is one image; a list of them, top first,
is what --backing-chain prints. QMP query-named-block-nodes: ``qmp_disk(...)`` gives
the format and storage nodes of one disk, the way QEMU lists them.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

GRANULARITY = 65536


def bitmap(name: str, *flags: str, granularity: Optional[int] = GRANULARITY) -> dict[str, Any]:
    """A bitmap entry of qemu-img info: flags 'auto' (recording) and 'in-use'."""
    entry: dict[str, Any] = {"name": name, "flags": list(flags)}
    if granularity is not None:
        entry["granularity"] = granularity
    return entry


def layer(filename: str, bitmaps: Iterable[dict[str, Any]] = (), backing: Optional[str] = None, *,
          format: str = "qcow2", compat: str = "1.1", backing_format: Optional[str] = "qcow2",
          full_backing: Optional[str] = None, dirty: bool = False, corrupt: bool = False,
          children: bool = False) -> dict[str, Any]:
    """One image as qemu-img info --output=json prints it. `backing` is the recorded
    name; `full_backing` the resolved one (default: the same); `backing_format` None
    means qemu probed it. A raw layer has no format-specific part, and qemu-img leaves
    'bitmaps' out when there are none (never [])."""
    image: dict[str, Any] = {"virtual-size": 1048576, "filename": filename, "cluster-size": 65536,
                             "format": format, "actual-size": 200704, "dirty-flag": dirty}
    if format == "qcow2":
        data: dict[str, Any] = {"compat": compat, "compression-type": "zlib", "lazy-refcounts": False,
                                "refcount-bits": 16, "corrupt": corrupt, "extended-l2": False}
        entries = list(bitmaps)
        if entries:
            data["bitmaps"] = entries
        image["format-specific"] = {"type": "qcow2", "data": data}
    if backing is not None:
        image["backing-filename"] = backing
        image["full-backing-filename"] = full_backing or backing
        if backing_format is not None:
            image["backing-filename-format"] = backing_format
    if children:  # QEMU 8.0 and later
        image["children"] = [{"name": "file", "info": {"children": [], "virtual-size": 197120,
                                                        "filename": filename, "format": "file"}}]
    return image


def qemu_img_chain(layers: Sequence[Iterable[dict[str, Any]]], directory: str = "/var/lib/images",
                   stem: str = "layer", incomplete: bool = False, **options: Any) -> list[dict[str, Any]]:
    """qemu-img info --backing-chain of a qcow2 chain: `layers` holds each layer's
    bitmap entries, top first; `incomplete`: the last names a backing file not given."""
    out = []
    for i, bitmaps in enumerate(layers):
        below = i + 1 < len(layers) or incomplete
        out.append(layer(f"{directory}/{stem}{i}.qcow2", bitmaps,
                         f"{stem}{i + 1}.qcow2" if below else None,
                         full_backing=f"{directory}/{stem}{i + 1}.qcow2" if below else None, **options))
    return out


def qmp_bitmap(name: str, recording: bool = True, persistent: bool = True, busy: bool = False,
               inconsistent: bool = False, granularity: int = GRANULARITY) -> dict[str, Any]:
    """A dirty-bitmaps entry of a QMP block node; QEMU adds 'inconsistent' only when true."""
    entry: dict[str, Any] = {"name": name, "recording": recording, "persistent": persistent,
                             "busy": busy, "granularity": granularity, "count": 0}
    if inconsistent:
        entry["inconsistent"] = True
    return entry


def qmp_disk(layers: Sequence[Iterable[dict[str, Any]]], prefix: str = "vda",
             directory: str = "/var/lib/images", incomplete: bool = False) -> list[dict[str, Any]]:
    """The QMP nodes of one disk, top first: each layer a qcow2 format node (with the
    given dirty-bitmaps entries) over its file node."""
    nodes = []
    for i, bitmaps in enumerate(layers):
        file = f"{directory}/{prefix}{i}.qcow2"
        image = layer(file)
        del image["format-specific"]["data"]["compression-type"]  # as QMP shows it
        if i + 1 < len(layers) or incomplete:
            below = f"{directory}/{prefix}{i + 1}.qcow2"
            image.update({"backing-filename": below, "full-backing-filename": below,
                          "backing-filename-format": "qcow2"})
        node: dict[str, Any] = {"node-name": f"{prefix}-{i}-format", "drv": "qcow2", "file": file,
                                "image": image, "ro": i > 0, "backing_file_depth": len(layers) - 1 - i}
        entries = list(bitmaps)
        if entries:
            node["dirty-bitmaps"] = entries
        nodes.append(node)
        nodes.append({"node-name": f"{prefix}-{i}-storage", "drv": "file", "file": file,
                      "image": {"virtual-size": 197120, "filename": file, "format": "file"},
                      "ro": i > 0, "backing_file_depth": 0})
    return nodes


def node(nodes: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    """The QMP node of that node-name."""
    return next(n for n in nodes if n["node-name"] == name)
