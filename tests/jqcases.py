"""Generated input for the property tests: chains for the differential tests (qemu-img
or QMP form, random depth, flags, raw and v2 layers, and hostile bitmap names), and
any JSON value at all, biased toward the keys and values that real input holds."""

from __future__ import annotations

from typing import Any, Iterator, Optional

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


# ------------------------------------------------- any JSON value, biased keys

KEYS = ["filename", "format", "format-specific", "type", "data", "bitmaps", "name", "flags",
        "granularity", "node-name", "drv", "file", "dirty-bitmaps", "recording", "persistent",
        "inconsistent", "busy", "status", "count", "image", "backing-filename",
        "full-backing-filename", "backing-filename-format", "backing-image", "compat",
        "return", "error", "class", "desc", "device", "inserted", "children", "virtual-size"]
WORDS = ["qcow2", "raw", "file", "auto", "in-use", "1.1", "0.10", "a", "b", "current",
         "top.qcow2", "base.qcow2", "top-format", "disabled", "active", "frozen", "GenericError"]
SURROGATES = ["\ud800", "\udc80"]
ODD = [*SURROGATES, "\n", "\r", "\x1b", "\u2028", "\x00", "'", '"', "\\"]


def _integers(jq_safe: bool) -> Any:
    return st.integers(-(2 ** 53), 2 ** 53) if jq_safe else st.integers()


def _floats(jq_safe: bool) -> Any:
    return st.sampled_from([0.5, 1.5, -2.25, 65536.5]) if jq_safe else st.floats()


def any_text(jq_safe: bool = False) -> Any:
    """Short strings, odd characters included (lone surrogates unless jq_safe)."""
    if jq_safe:
        chars = st.characters(blacklist_categories=("Cs",)) | st.sampled_from([c for c in ODD if c not in SURROGATES])
    else:
        chars = st.characters() | st.sampled_from(ODD)
    return st.text(chars, max_size=8)


def any_json(jq_safe: bool = False) -> Any:
    """Any JSON value. jq_safe: only values that jq holds as Python does: no lone
    surrogates (jq reads them as U+FFFD), no whole numbers written as floats (1.0 is
    the integer 1 in jq), no integers past 2**53 (jq's are doubles); fractions are few
    and short, so that both print them alike."""
    text = any_text(jq_safe)
    scalars = (st.none() | st.booleans() | _integers(jq_safe) | _floats(jq_safe) | st.sampled_from(WORDS)
               | st.sampled_from([65536, 512, 0, -1]) | text)
    keys = st.sampled_from(KEYS) | text
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                        | st.dictionaries(keys, inner, max_size=8), max_leaves=40)


# ------------------------------------- well-formed input, broken in one place

def paths(value: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in a JSON value (the root is ())."""
    yield here
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, here + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, here + (i,))


def replace_at(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return value


def broken(draw: Any, value: Any, jq_safe: bool = False) -> Any:
    """The value with one place replaced by any JSON value (half the time one of the
    same kind: a string stays a string, with odd characters), or one key or item
    deleted: what random JSON rarely reaches."""
    path = draw(st.sampled_from(list(paths(value))))
    delete = bool(path) and draw(st.booleans())
    old: Any = value
    for key in path:
        old = old[key]
    same = {str: any_text(jq_safe), bool: st.booleans(), int: _integers(jq_safe),
            float: _floats(jq_safe)}.get(type(old))
    new = None if delete else draw((same | any_json(jq_safe)) if same is not None else any_json(jq_safe))
    return replace_at(value, path, new, delete)
