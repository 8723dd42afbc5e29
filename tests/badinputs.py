"""Bad input that is JSON, in one place. tests/test_bad_input.py runs each through
kbrules check (one line on stderr, holding the words listed, and exit status 2);
tests/test_jq.py runs every one of them (every_bad_json()) through the jq program in
jq 1.6, gojq and libjq, which must print the very line that check prints.

Each table lists (id, value, words of the message); the mutations break a good
input (chain() or qmp_nodes()) in one place."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

from builders import bitmap, layer
from helpers import FIXTURES, LIBVIRT, make_chain, qemu_img


def chain() -> list[dict[str, Any]]:
    """A good 2-layer qemu-img --backing-chain value, to break in one place."""
    return [layer("top.qcow2", [bitmap("a", "auto"), bitmap("b", "auto")], backing="base.qcow2"),
            layer("base.qcow2", [bitmap("a", "auto")])]


def qmp_nodes() -> list[dict[str, Any]]:
    """A good QMP query-named-block-nodes value (libvirt's own 'basic' data)."""
    return json.loads((LIBVIRT / "basic.json").read_text())


# ---------------------------------------------------------------- JSON, wrong shape

SHAPE = "expected qemu-img info --output=json"

OTHER_SHAPES: list[tuple[str, Any, list[str]]] = [
    ("int", 42, ["top level", "a number", SHAPE]),
    ("float", 1.5, ["top level", "a number", SHAPE]),
    ("string", "top.qcow2", ["top level", "a string", SHAPE]),
    ("null", None, ["top level", "null", SHAPE]),
    ("bool", True, ["top level", "a boolean", SHAPE]),
    ("empty-object", {}, ["top level", "neither 'filename' nor 'return'", SHAPE]),
    ("empty-array", [], ["top level", "an empty array", SHAPE]),
    ("numbers", [1, 2], ["[0]", "expected an object, got a number"]),
    ("nested-array", [[]], ["[0]", "expected an object, got an array"]),
    ("unrelated-keys", {"foo": 1, "bar": [2]}, ["top level", "neither 'filename' nor 'return'"]),
    ("no-filename", {"virtual-size": 1048576, "dirty-flag": False}, ["top level", "neither 'filename'"]),
    ("no-format", [{"filename": "a.qcow2"}], ["[0]", "missing 'format'"]),
    ("format-only", {"format": "qcow2"}, ["top level", "missing 'filename'"]),
    # What the issue found passing as a clean report in jq.
    ("foo", {"foo": 1}, ["top level", "neither 'filename' nor 'return'"]),
    ("array-of-foo", [{"foo": 1}], ["[0]", "missing 'filename'"]),
    ("filename-only", {"filename": "x.qcow2"}, ["top level", "missing 'format'"]),
]

QMP_REPLIES: list[tuple[str, Any, list[str]]] = [
    ("object", {"return": {}}, ["return", "a QMP reply to another command (an object, not an array"]),
    ("null", {"return": None}, ["return", "a QMP reply to another command (null, not an array"]),
    ("string", {"return": "x"}, ["return", "a QMP reply to another command (a string, not an array"]),
    ("empty", {"return": []}, ["return", "no format node"]),
    ("number", {"return": [1]}, ["return[0]", "expected an object, got a number"]),
    ("greeting", {"QMP": {"version": {}, "capabilities": []}}, ["top level", "this looks like a QMP greeting"]),
]

LOOK_ALIKES: list[tuple[str, Any, list[str]]] = [
    ("event", {"event": "BLOCK_JOB_COMPLETED", "data": {"device": "vda"}, "timestamp": {"seconds": 1}},
     ["top level", "this looks like a QMP event"]),
    ("another-reply", {"return": [{"id": "job0", "type": "backup", "device": "vda", "status": "running"}]},
     ["return", "a QMP reply to another command (its entries have no 'node-name'"]),
    ("no-virtual-size", {"filename": "x.qcow2", "format": "qcow2"}, ["top level", "missing 'virtual-size'"]),
    ("no-virtual-size-below", [layer("top.qcow2", [], "base.qcow2"), {"filename": "base.qcow2", "format": "qcow2"}],
     ["[1]", "missing 'virtual-size'"]),
]


def qmp_nodes_mixed_with_other_objects() -> list[Any]:
    nodes: list[Any] = qmp_nodes()
    nodes.insert(1, {"device": "drive-virtio-disk0"})
    return nodes


def qemu_img_layers_mixed_with_qmp_nodes() -> list[Any]:
    return chain() + qmp_nodes()[:1]


def query_block(wrapped: bool) -> Any:
    """QMP query-block (not query-named-block-nodes), bare or as a reply."""
    disk = {"device": "drive-virtio-disk0", "qdev": "/machine/peripheral/virtio-disk0/virtio-backend",
            "locked": False, "removable": False, "type": "unknown",
            "inserted": {"node-name": "libvirt-1-format", "drv": "qcow2", "file": "/var/lib/top.qcow2",
                         "image": {"filename": "/var/lib/top.qcow2", "format": "qcow2",
                                   "virtual-size": 1048576},
                         "dirty-bitmaps": [{"name": "a", "recording": True, "persistent": True,
                                            "busy": False, "granularity": 65536, "count": 0}]}}
    return {"return": [disk]} if wrapped else [disk]


QMP_ERROR_REPLY = {"error": {"class": "GenericError", "desc": "Cannot find device='vdz' nor node-name='vdz'"},
                   "id": "libvirt-42"}
QMP_ERROR_REPLY_WITH_LINE_BREAKS = {"error": {"class": "Generic\nError", "desc": "first\nsecond\r\nthird\x1b[31m"}}


def qmp_only_protocol_nodes() -> list[Any]:
    return [n for n in qmp_nodes() if n["drv"] == "file"]


def other_commands(directory: Path) -> dict[str, bytes]:
    """What other qemu-img commands print as JSON, about a real image."""
    make_chain(directory, [{"a": "ok"}, {}])
    return {command: qemu_img(command, "--output=json", "layer0.qcow2", cwd=directory).encode()
            for command in ("check", "measure", "map")}


# ------------------------------------------------------ wrong types deep inside, paths

Mutator = Callable[[Any], None]


def _set(path: list[Any], value: Any) -> Mutator:
    def mutate(doc: Any) -> None:
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value
    return mutate


def _delete(path: list[Any]) -> Mutator:
    def mutate(doc: Any) -> None:
        for key in path[:-1]:
            doc = doc[key]
        del doc[path[-1]]
    return mutate


BITMAPS = ["format-specific", "data", "bitmaps"]

QEMU_IMG_DEEP: list[tuple[str, Mutator, list[str]]] = [
    ("bitmaps-not-a-list", _set([1, *BITMAPS], {"name": "a"}),
     ["[1].format-specific.data.bitmaps:", "expected an array, got an object"]),
    ("bitmaps-a-string", _set([0, *BITMAPS], "a,b"),
     ["[0].format-specific.data.bitmaps:", "expected an array, got a string"]),
    ("bitmap-not-an-object", _set([0, *BITMAPS, 1], "b"),
     ["[0].format-specific.data.bitmaps[1]:", "expected an object, got a string"]),
    ("bitmap-without-name", _delete([0, *BITMAPS, 1, "name"]),
     ["[0].format-specific.data.bitmaps[1]:", "missing 'name'"]),
    ("bitmap-name-null", _set([0, *BITMAPS, 1, "name"], None),
     ["[0].format-specific.data.bitmaps[1]", "name"]),
    ("bitmap-name-a-number", _set([0, *BITMAPS, 1, "name"], 7),
     ["[0].format-specific.data.bitmaps[1].name:", "expected a string, got a number"]),
    ("flags-not-strings", _set([0, *BITMAPS, 0, "flags"], ["auto", 1]),
     ["[0].format-specific.data.bitmaps[0].flags[1]:", "expected a string, got a number"]),
    ("flags-a-string", _set([1, *BITMAPS, 0, "flags"], "auto"),
     ["[1].format-specific.data.bitmaps[0].flags:", "expected an array, got a string"]),
    ("granularity-a-string", _set([0, *BITMAPS, 1, "granularity"], "65536"),
     ["[0].format-specific.data.bitmaps[1].granularity:", "expected a number, got a string"]),
    ("granularity-a-boolean", _set([0, *BITMAPS, 1, "granularity"], True),
     ["[0].format-specific.data.bitmaps[1].granularity:", "got a boolean"]),
    ("granularity-a-fraction", _set([0, *BITMAPS, 1, "granularity"], 65536.5),
     ["[0].format-specific.data.bitmaps[1].granularity:", "expected a number, got a number"]),
    ("filename-a-number", _set([1, "filename"], 42),
     ["[1].filename:", "expected a string, got a number"]),
    ("format-null", _set([1, "format"], None), ["[1]", "format"]),
    ("format-specific-a-list", _set([0, "format-specific"], []),
     ["[0].format-specific:", "expected an object, got an array"]),
    ("data-a-string", _set([0, "format-specific", "data"], "qcow2"),
     ["[0].format-specific.data:", "expected an object, got a string"]),
    ("compat-a-number", _set([0, "format-specific", "data", "compat"], 1.1),
     ["[0].format-specific.data.compat:", "expected a string, got a number"]),
    ("backing-a-number", _set([0, "full-backing-filename"], 3),
     ["[0].full-backing-filename:", "expected a string"]),
    ("dirty-flag-a-string", _set([0, "dirty-flag"], "true"),
     ["[0].dirty-flag:", "expected a boolean, got a string"]),
    ("corrupt-a-number", _set([1, "format-specific", "data", "corrupt"], 0),
     ["[1].format-specific.data.corrupt:", "expected a boolean, got a number"]),
    ("virtual-size-a-string", _set([1, "virtual-size"], "1M"),
     ["[1].virtual-size:", "expected a number, got a string"]),
    ("layer-null", _set([1], None), ["[1]:", "expected an object, got null"]),
]


def qemu_img_deep(mutate: Mutator) -> Any:
    doc = chain()
    mutate(doc)
    return doc


QmpMutator = Callable[[list[dict[str, Any]]], None]

QMP_DEEP: list[tuple[str, QmpMutator, list[str]]] = [
    ("dirty-bitmaps-an-object",
     lambda ns: ns[0].update({"dirty-bitmaps": {"name": "a"}}),
     ["[0].dirty-bitmaps:", "expected an array, got an object"]),
    ("bitmap-name-null",  # a bitmap without 'name' is a job's own, skipped (test_qmp)
     lambda ns: ns[0]["dirty-bitmaps"][2].update({"name": None}),
     ["[0].dirty-bitmaps[2].name:", "expected a string, got null"]),
    ("recording-a-string",
     lambda ns: ns[0]["dirty-bitmaps"][1].update({"recording": "true"}),
     ["[0].dirty-bitmaps[1].recording:", "expected a boolean, got a string"]),
    ("persistent-a-number",
     lambda ns: ns[0]["dirty-bitmaps"][0].update({"persistent": 1}),
     ["[0].dirty-bitmaps[0].persistent:", "expected a boolean, got a number"]),
    ("inconsistent-a-string",
     lambda ns: ns[0]["dirty-bitmaps"][0].update({"inconsistent": "yes"}),
     ["[0].dirty-bitmaps[0].inconsistent:", "expected a boolean"]),
    ("granularity-a-string",
     lambda ns: ns[0]["dirty-bitmaps"][3].update({"granularity": "64k"}),
     ["[0].dirty-bitmaps[3].granularity:", "expected a number, got a string"]),
    ("node-name-a-number",
     lambda ns: ns[1].update({"node-name": 1}),
     ["[1].node-name:", "expected a string, got a number"]),
    ("file-a-number",
     lambda ns: ns[0].update({"file": 5}),
     ["[0].file:", "expected a string, got a number"]),
    ("no-drv",
     lambda ns: ns[1].pop("drv"),
     ["[1]:", "missing 'drv'"]),
    ("image-a-string",
     lambda ns: ns[0].update({"image": "/tmp/bitmaps.qcow2"}),
     ["[0].image:", "expected an object, got a string"]),
    ("backing-filename-a-list",
     lambda ns: ns[0]["image"].update({"backing-filename": ["/tmp/x"]}),
     ["[0].image.backing-filename:", "expected a string, got an array"]),
    ("status-a-number",
     lambda ns: ns[0]["dirty-bitmaps"][1].update({"status": 1}),
     ["[0].dirty-bitmaps[1].status:", "expected a string, got a number"]),
]


def qmp_deep(mutate: QmpMutator, wrapped: bool) -> Any:
    nodes = qmp_nodes()
    assert nodes[0]["node-name"] == "libvirt-1-format"
    mutate(nodes)
    return {"return": nodes} if wrapped else nodes


def qemu_img_single_object_without_name() -> Any:
    """One image (no --backing-chain): paths start at the object's own keys."""
    doc = chain()[1]
    doc["format-specific"]["data"]["bitmaps"].append({"flags": []})
    return doc


def nested_backing_image_with_a_bad_flag() -> Any:
    """A nested backing-image (older tools print one): the path follows it."""
    doc = chain()[0]
    doc["backing-image"] = chain()[1]
    doc["backing-image"]["format-specific"]["data"]["bitmaps"][0]["flags"] = [None]
    return doc


# ------------------------------------------------------------ duplicates, loops

def two_bitmaps_of_one_name_qemu_img() -> Any:
    doc = chain()
    doc[0]["format-specific"]["data"]["bitmaps"].append(bitmap("a", "auto"))
    return doc


def two_bitmaps_of_one_name_qmp() -> Any:
    nodes = qmp_nodes()
    nodes[0]["dirty-bitmaps"].append(copy.deepcopy(nodes[0]["dirty-bitmaps"][0]))
    return nodes


def two_format_nodes_for_one_file() -> Any:
    """A twin that holds the same bitmaps cannot change a verdict: it is no error
    (test_qmp.py); one that holds other bitmaps leaves the chain ambiguous."""
    nodes = qmp_nodes()
    twin = copy.deepcopy(nodes[0])
    twin["node-name"] = "twin-format"
    twin["dirty-bitmaps"][0]["recording"] = not twin["dirty-bitmaps"][0]["recording"]
    return nodes + [twin]


def qmp_backing_loop() -> Any:
    nodes = qmp_nodes()
    nodes[0]["image"]["backing-filename"] = nodes[0]["file"]
    return nodes


def qmp_backing_loop_below_the_top() -> Any:
    a = {"node-name": "a", "drv": "qcow2", "file": "a.qcow2", "image": {"backing-filename": "b.qcow2"}}
    b = {"node-name": "b", "drv": "qcow2", "file": "b.qcow2", "image": {"backing-filename": "c.qcow2"}}
    c = {"node-name": "c", "drv": "qcow2", "file": "c.qcow2", "image": {"backing-filename": "b.qcow2"}}
    return [a, b, c]


# ------------------------------------------------------------ all of them

class Bad(NamedTuple):
    id: str
    value: Any
    top: Optional[str] = None  # --top NODE


TWO_DISKS = FIXTURES / "qmp-two-disks.json"  # the QMP data of tests/test_qmp.py


def every_bad_json() -> list[Bad]:
    """Every bad JSON input above (and the --top refusals of tests/test_qmp.py), each a
    concrete value."""
    out = [Bad(f"shape-{i}", v) for i, v, _ in OTHER_SHAPES]
    out += [Bad(f"qmp-reply-{i}", v) for i, v, _ in QMP_REPLIES]
    out += [Bad(f"look-alike-{i}", v) for i, v, _ in LOOK_ALIKES]
    out += [Bad(f"qemu-img-deep-{i}", qemu_img_deep(m)) for i, m, _ in QEMU_IMG_DEEP]
    out += [Bad(f"qmp-deep-{i}-{'return' if w else 'bare'}", qmp_deep(m, w))
            for i, m, _ in QMP_DEEP for w in (False, True)]
    out += [Bad("qmp-mixed", qmp_nodes_mixed_with_other_objects()),
            Bad("qemu-img-mixed", qemu_img_layers_mixed_with_qmp_nodes()),
            Bad("query-block", query_block(False)), Bad("query-block-reply", query_block(True)),
            Bad("qmp-error", QMP_ERROR_REPLY), Bad("qmp-error-line-breaks", QMP_ERROR_REPLY_WITH_LINE_BREAKS),
            Bad("qmp-only-protocol-nodes", qmp_only_protocol_nodes()),
            Bad("single-object-path", qemu_img_single_object_without_name()),
            Bad("nested-backing-image-path", nested_backing_image_with_a_bad_flag()),
            Bad("duplicate-qemu-img", two_bitmaps_of_one_name_qemu_img()),
            Bad("duplicate-qmp", two_bitmaps_of_one_name_qmp()),
            Bad("twin-format-nodes", two_format_nodes_for_one_file()),
            Bad("qmp-loop", qmp_backing_loop()), Bad("qmp-loop-below-top", qmp_backing_loop_below_the_top()),
            Bad("top-with-qemu-img", chain(), top="libvirt-1-format")]
    two_disks = json.loads(TWO_DISKS.read_text())
    out += [Bad("two-disks-without-top", two_disks)]
    out += [Bad(f"unknown-top-{t or 'empty'}", two_disks, top=t)
            for t in ("vda", "top-storage", "libvirt-1-format", "")]
    return out
