"""Generated chains for the differential tests: qemu-img or QMP form, random depth,
flags, raw and v2 layers, and hostile bitmap names."""

from __future__ import annotations

from typing import Any, Optional

from hypothesis import strategies as st

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
        layer: dict[str, Any] = {"filename": f"dir/layer {i}.img", "format": "raw" if kind == "raw" else "qcow2",
                                 "virtual-size": 1048576, "dirty-flag": False}
        if draw(st.integers(0, 4)) == 0:
            layer["dirty-flag"] = True
        if kind != "raw":
            data: dict[str, Any] = {"compat": "0.10" if kind == "v2" else "1.1", "refcount-bits": 16,
                                    "corrupt": draw(st.integers(0, 5)) == 0}
            names = draw(st.lists(NAMES, max_size=4, unique=True)) if kind == "v3" else []
            if names:
                data["bitmaps"] = [{"name": n, "granularity": draw(GRANULARITY),
                                    "flags": draw(st.lists(st.sampled_from(["auto", "in-use"]), unique=True))}
                                   for n in names]
            layer["format-specific"] = {"type": "qcow2", "data": data}
        below = i + 1 < depth or draw(st.integers(0, 3)) == 0
        if below:
            layer["backing-filename"] = f"layer {i + 1}.img"
            layer["full-backing-filename"] = f"dir/layer {i + 1}.img"
            if draw(st.integers(0, 4)) != 0:  # else: the format is probed
                layer["backing-filename-format"] = "qcow2"
        layers.append(layer)
    return layers[0] if depth == 1 and draw(st.booleans()) else layers


@st.composite
def qmp_nodes(draw: Any) -> Any:
    disks = draw(st.integers(1, 2))
    nodes = []
    for d in range(disks):
        depth = draw(st.integers(1, 5))
        for i in range(depth):
            file = f"/var/lib/d{d}/l{i}.qcow2"
            image: dict[str, Any] = {"filename": file, "format": "qcow2", "dirty-flag": draw(st.booleans()),
                                     "format-specific": {"type": "qcow2", "data": {
                                         "compat": draw(st.sampled_from(["1.1", "0.10"])),
                                         "corrupt": draw(st.booleans())}}}
            missing_base = i + 1 == depth and draw(st.integers(0, 5)) == 0
            if i + 1 < depth or missing_base:
                image["backing-filename"] = f"/var/lib/d{d}/l{i + 1}.qcow2"
                if draw(st.booleans()):
                    image["backing-filename-format"] = "qcow2"
            bitmaps = []
            for n in draw(st.lists(NAMES, max_size=4, unique=True)):
                b: dict[str, Any] = {"name": n, "recording": draw(st.booleans()),
                                     "persistent": draw(st.booleans()), "busy": draw(st.booleans()),
                                     "granularity": draw(GRANULARITY), "count": 0}
                if draw(st.booleans()):
                    b["inconsistent"] = True
                bitmaps.append(b)
            drv = draw(st.sampled_from(["qcow2", "qcow2", "raw"]))
            nodes.append({"node-name": f"d{d}-l{i}-format", "drv": drv, "file": file, "image": image,
                          "dirty-bitmaps": bitmaps})
            nodes.append({"node-name": f"d{d}-l{i}-storage", "drv": "file", "file": file,
                          "image": {"filename": file, "format": "file"}, "dirty-bitmaps": []})
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
        top = f"{draw(st.sampled_from(disks))}-l0-format" if len(disks) > 1 else None
    names = draw(st.one_of(st.none(), st.lists(NAMES, min_size=1, max_size=3)))
    return value, names, top
