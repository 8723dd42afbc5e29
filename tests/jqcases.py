"""Generated chains for the differential tests: qemu-img or QMP form, random depth,
flags, raw and v2 layers, and hostile bitmap names."""

from __future__ import annotations

from typing import Any, Optional

from hypothesis import strategies as st

import builders
from builders import bitmap, layer, qmp_bitmap

HOSTILE = ['") | halt_error', "\\(.)", "$__loc__", "a\nb", "x" * 1023, "it's", "día-ü-✓",
           " ", '"', "\\", "{name}", "{{", "@sh", "#", "null", "0", "__proto__", "a\u0000b",
           "\U0001F600", "\t", "$ARGS"]
NAMES = st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=12),
                  st.sampled_from(["a", "b", "c", "daily"]))
GRANULARITY = st.sampled_from([512, 65536, 1 << 20, 1 << 31])


@st.composite
def qemu_img_chain(draw: Any) -> Any:
    depth = draw(st.integers(1, 6))
    layers = []
    for i in range(depth):
        kind = draw(st.sampled_from(["v3", "v3", "v3", "v2", "raw"]))
        names = draw(st.lists(NAMES, max_size=4, unique=True)) if kind == "v3" else []
        bitmaps = [bitmap(n, *draw(st.lists(st.sampled_from(["auto", "in-use"]), unique=True)),
                          granularity=draw(GRANULARITY)) for n in names]
        below = i + 1 < depth or draw(st.integers(0, 3)) == 0
        probed = draw(st.integers(0, 4)) == 0  # qemu probed the backing file's format
        layers.append(layer(f"dir/layer {i}.img", bitmaps, f"layer {i + 1}.img" if below else None,
                            format="raw" if kind == "raw" else "qcow2",
                            compat="0.10" if kind == "v2" else "1.1",
                            full_backing=f"dir/layer {i + 1}.img", backing_format=None if probed else "qcow2",
                            dirty=draw(st.integers(0, 4)) == 0, corrupt=draw(st.integers(0, 5)) == 0))
    return layers[0] if depth == 1 and draw(st.booleans()) else layers


@st.composite
def qmp_nodes(draw: Any) -> Any:
    disks = draw(st.integers(1, 2))
    nodes = []
    for d in range(disks):
        depth = draw(st.integers(1, 5))
        missing_base = draw(st.integers(0, 5)) == 0
        disk = builders.qmp_disk([[qmp_bitmap(n, recording=draw(st.booleans()), persistent=draw(st.booleans()),
                                              busy=draw(st.booleans()), inconsistent=draw(st.booleans()),
                                              granularity=draw(GRANULARITY))
                                   for n in draw(st.lists(NAMES, max_size=4, unique=True))]
                                  for _ in range(depth)], f"d{d}", f"/var/lib/d{d}", incomplete=missing_base)
        for node in disk[::2]:  # the format nodes: vary what the image says
            image = node["image"]
            image["dirty-flag"] = draw(st.booleans())
            image["format-specific"]["data"].update(compat=draw(st.sampled_from(["1.1", "0.10"])),
                                                    corrupt=draw(st.booleans()))
            if "backing-filename" in image and draw(st.booleans()):
                del image["backing-filename-format"]
            node["drv"] = draw(st.sampled_from(["qcow2", "qcow2", "raw"]))
        nodes += disk
    nodes = draw(st.permutations(nodes))
    return {"return": nodes} if draw(st.booleans()) else nodes


@st.composite
def case(draw: Any) -> tuple[Any, Optional[list[str]], Optional[str]]:
    """(input, bitmap names or None for all, QMP top node or None)."""
    value = draw(st.one_of(qemu_img_chain(), qmp_nodes()))
    nodes = value["return"] if isinstance(value, dict) and "return" in value else value
    top = None
    if isinstance(nodes, list) and nodes and "node-name" in nodes[0]:
        disks = sorted({n["node-name"][:2] for n in nodes})
        top = f"{draw(st.sampled_from(disks))}-0-format" if len(disks) > 1 else None
    names = draw(st.one_of(st.none(), st.lists(NAMES, min_size=1, max_size=3)))
    return value, names, top
