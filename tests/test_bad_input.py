"""Bad input and bad command lines: exit 2, one line on stderr naming what is wrong and
where, nothing on stdout (never a report), and never a traceback."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from engine import __version__
from engine.cli import main
from engine.loader import load_rules
from builders import bitmap, layer
from helpers import LIBVIRT, Run, assert_one_line_error, kbrules, make_chain, qemu_img

# ---------------------------------------------------------------------------- helpers

RULES = load_rules()





VIAS = ["stdin", "file.json", "file"]


def run_input(via: str, data: bytes, tmp_path: Path, *extra: str) -> tuple[Run, str]:
    """kbrules check on `data` given as stdin, a .json file, or a file without suffix
    read as JSON because --json says so. Returns the run and the input's name in messages."""
    if via == "stdin":
        return kbrules("check", "-", *extra, stdin=data), "<stdin>"
    path = tmp_path / ("input.json" if via == "file.json" else "input")
    path.write_bytes(data)
    return kbrules("check", *(["--json"] if via == "file" else []), str(path), *extra), str(path)


def run_value(via: str, value: Any, tmp_path: Path, *extra: str) -> tuple[Run, str]:
    return run_input(via, json.dumps(value).encode(), tmp_path, *extra)


def chain() -> list[dict[str, Any]]:
    """A good 2-layer qemu-img --backing-chain value, to break in one place."""
    return [layer("top.qcow2", [bitmap("a", "auto"), bitmap("b", "auto")], backing="base.qcow2"),
            layer("base.qcow2", [bitmap("a", "auto")])]


def qmp_nodes() -> list[dict[str, Any]]:
    """A good QMP query-named-block-nodes value (libvirt's own 'basic' data)."""
    return json.loads((LIBVIRT / "basic.json").read_text())


# ------------------------------------------------------------------ empty, not JSON


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("data", [b"", b"   \n\t\n  "], ids=["empty", "whitespace"])
def test_empty_input(via: str, data: bytes, tmp_path: Path) -> None:
    run, where = run_input(via, data, tmp_path)
    assert_one_line_error(run, where, "empty input")


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("data", [b"hello", b"filename: top.qcow2\n", b"{'a': 1}",
                                  b'{"filename": "a", "format": "qcow2"} trailing',
                                  b"[1, 2,, 3]"],
                         ids=["word", "yaml", "python-dict", "trailing-garbage", "double-comma"])
def test_not_json(via: str, data: bytes, tmp_path: Path) -> None:
    run, where = run_input(via, data, tmp_path)
    assert_one_line_error(run, where, "not JSON", "line 1 column")


@pytest.fixture(scope="module")
def real_info(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """qemu-img info --output=json --backing-chain of a real 3-layer chain, as bytes."""
    d = tmp_path_factory.mktemp("real")
    top = make_chain(d, [{"a": "ok", "b": "ok"}, {"a": "ok"}, {"a": "disabled"}])[0]
    return qemu_img("info", "--output=json", "--backing-chain", top.name, cwd=d).encode()


@pytest.mark.parametrize("via", VIAS)
def test_truncated_json_cut_in_half(via: str, real_info: bytes, tmp_path: Path) -> None:
    run, where = run_input(via, real_info[: len(real_info) // 2], tmp_path)
    assert_one_line_error(run, where, "truncated JSON")


def test_truncated_json_at_every_byte(real_info: bytes) -> None:
    """Wherever the cut falls (inside a string, a number, a literal, between tokens),
    it is called truncated, never 'not JSON' or worse."""
    whole = real_info.rstrip()
    for n in range(1, len(whole)):
        run = kbrules("check", "-", stdin=whole[:n])
        assert_one_line_error(run, "<stdin>", "truncated JSON")


def test_the_real_output_itself_is_fine(real_info: bytes) -> None:
    assert kbrules("check", "-", stdin=real_info).code == 1  # 'a' is disabled in the base


# ---------------------------------------------------------------- JSON, wrong shape

SHAPE = "expected qemu-img info --output=json"


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("value, needles", [
    (42, ["top level", "a number", SHAPE]),
    (1.5, ["top level", "a number", SHAPE]),
    ("top.qcow2", ["top level", "a string", SHAPE]),
    (None, ["top level", "null", SHAPE]),
    (True, ["top level", "a boolean", SHAPE]),
    ({}, ["top level", "neither 'filename' nor 'return'", SHAPE]),
    ([], ["top level", "an empty array", SHAPE]),
    ([1, 2], ["[0]", "expected an object, got a number"]),
    ([[]], ["[0]", "expected an object, got an array"]),
    ({"foo": 1, "bar": [2]}, ["top level", "neither 'filename' nor 'return'"]),
    ({"virtual-size": 1048576, "dirty-flag": False}, ["top level", "neither 'filename'"]),
    ([{"filename": "a.qcow2"}], ["[0]", "missing 'format'"]),
    ({"format": "qcow2"}, ["top level", "missing 'filename'"]),
], ids=["int", "float", "string", "null", "bool", "empty-object", "empty-array", "numbers",
        "nested-array", "unrelated-keys", "no-filename", "no-format", "format-only"])
def test_json_of_another_shape(via: str, value: Any, needles: list[str], tmp_path: Path) -> None:
    run, where = run_value(via, value, tmp_path)
    assert_one_line_error(run, where, *needles)


@pytest.mark.parametrize("via", VIAS)
def test_qmp_nodes_mixed_with_other_objects(via: str, tmp_path: Path) -> None:
    nodes = qmp_nodes()
    nodes.insert(1, {"device": "drive-virtio-disk0"})
    run, where = run_value(via, nodes, tmp_path)
    assert_one_line_error(run, where, "[1]", "no 'node-name'")


@pytest.mark.parametrize("via", VIAS)
def test_qemu_img_layers_mixed_with_qmp_nodes(via: str, tmp_path: Path) -> None:
    value = chain() + qmp_nodes()[:1]
    run, where = run_value(via, value, tmp_path)
    assert_one_line_error(run, where, "[0]", "no 'node-name'")


@pytest.mark.parametrize("wrapped", [False, True])
def test_qmp_query_block_is_refused_with_the_right_command(wrapped: bool, tmp_path: Path) -> None:
    """query-block (not query-named-block-nodes): say which command to use instead."""
    disk = {"device": "drive-virtio-disk0", "qdev": "/machine/peripheral/virtio-disk0/virtio-backend",
            "locked": False, "removable": False, "type": "unknown",
            "inserted": {"node-name": "libvirt-1-format", "drv": "qcow2", "file": "/var/lib/top.qcow2",
                         "image": {"filename": "/var/lib/top.qcow2", "format": "qcow2",
                                   "virtual-size": 1048576},
                         "dirty-bitmaps": [{"name": "a", "recording": True, "persistent": True,
                                            "busy": False, "granularity": 65536, "count": 0}]}}
    value: Any = {"return": [disk]} if wrapped else [disk]
    for via in VIAS:
        run, where = run_value(via, value, tmp_path)
        assert_one_line_error(run, where, "query-named-block-nodes")


@pytest.mark.parametrize("via", VIAS)
def test_qmp_error_reply(via: str, tmp_path: Path) -> None:
    reply = {"error": {"class": "GenericError",
                       "desc": "Cannot find device='vdz' nor node-name='vdz'"}, "id": "libvirt-42"}
    run, where = run_value(via, reply, tmp_path)
    assert_one_line_error(run, where, "QMP error reply", "GenericError",
                          "Cannot find device='vdz' nor node-name='vdz'")


def test_qmp_error_reply_with_line_breaks_stays_one_line() -> None:
    reply = {"error": {"class": "Generic\nError", "desc": "first\nsecond\r\nthird\x1b[31m"}}
    run = kbrules("check", "-", stdin=json.dumps(reply).encode())
    line = assert_one_line_error(run, "QMP error reply", "first", "third")
    assert "\x1b" not in line


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("reply, needles", [
    ({"return": {}}, ["return", "a QMP reply to another command (an object, not an array"]),
    ({"return": None}, ["return", "a QMP reply to another command (null, not an array"]),
    ({"return": "x"}, ["return", "a QMP reply to another command (a string, not an array"]),
    ({"return": []}, ["return", "no format node"]),
    ({"return": [1]}, ["return[0]", "expected an object, got a number"]),
    ({"QMP": {"version": {}, "capabilities": []}}, ["top level", "this looks like a QMP greeting"]),
], ids=["object", "null", "string", "empty", "number", "greeting"])
def test_qmp_reply_of_another_shape(via: str, reply: Any, needles: list[str], tmp_path: Path) -> None:
    run, where = run_value(via, reply, tmp_path)
    assert_one_line_error(run, where, *needles)


@pytest.fixture(scope="module")
def other_commands(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What other qemu-img commands print as JSON, about a real image."""
    d = tmp_path_factory.mktemp("others")
    make_chain(d, [{"a": "ok"}, {}])
    return {command: qemu_img(command, "--output=json", "layer0.qcow2", cwd=d).encode()
            for command in ("check", "measure", "map")}


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("command", ["check", "measure", "map"])
def test_other_qemu_img_commands_are_named(via: str, command: str, other_commands: dict[str, bytes],
                                           tmp_path: Path) -> None:
    """qemu-img check output has 'filename' and 'format' too: it once passed for an image
    without bitmaps (exit 0)."""
    run, where = run_input(via, other_commands[command], tmp_path)
    assert_one_line_error(run, where, f"this looks like qemu-img {command} --output=json")


@pytest.mark.parametrize("value, needles", [
    ({"event": "BLOCK_JOB_COMPLETED", "data": {"device": "vda"}, "timestamp": {"seconds": 1}},
     ["top level", "this looks like a QMP event"]),
    ({"return": [{"id": "job0", "type": "backup", "device": "vda", "status": "running"}]},
     ["return", "a QMP reply to another command (its entries have no 'node-name'"]),
    ({"filename": "x.qcow2", "format": "qcow2"}, ["top level", "missing 'virtual-size'"]),
    ([layer("top.qcow2", [], "base.qcow2"), {"filename": "base.qcow2", "format": "qcow2"}],
     ["[1]", "missing 'virtual-size'"]),
], ids=["event", "another-reply", "no-virtual-size", "no-virtual-size-below"])
def test_look_alikes_are_refused(value: Any, needles: list[str]) -> None:
    assert_one_line_error(kbrules("check", "-", stdin=json.dumps(value).encode()), *needles)


def test_qmp_only_protocol_nodes() -> None:
    nodes = [n for n in qmp_nodes() if n["drv"] == "file"]
    assert_one_line_error(kbrules("check", "-", stdin=json.dumps(nodes).encode()),
                          "no format node")


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
    ("layer-null", _set([1], None), ["[1]:", "expected an object, got null"]),
]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("mutate, needles", [c[1:] for c in QEMU_IMG_DEEP],
                         ids=[c[0] for c in QEMU_IMG_DEEP])
def test_qemu_img_wrong_type_deep_inside(via: str, mutate: Mutator, needles: list[str],
                                         tmp_path: Path) -> None:
    doc = chain()
    mutate(doc)
    run, where = run_value(via, doc, tmp_path)
    assert_one_line_error(run, where, *needles)


def test_qemu_img_single_object_paths_have_no_index() -> None:
    """One image (no --backing-chain): paths start at the object's own keys."""
    doc = chain()[1]
    doc["format-specific"]["data"]["bitmaps"].append({"flags": []})
    line = assert_one_line_error(kbrules("check", "-", stdin=json.dumps(doc).encode()),
                                 "<stdin>: format-specific.data.bitmaps[1]:", "missing 'name'")
    assert "[0]" not in line


def test_nested_backing_image_path() -> None:
    """A nested backing-image (older tools print one): the path follows it."""
    doc = chain()[0]
    doc["backing-image"] = chain()[1]
    doc["backing-image"]["format-specific"]["data"]["bitmaps"][0]["flags"] = [None]
    run = kbrules("check", "-", stdin=json.dumps(doc).encode())
    assert_one_line_error(run, "backing-image.format-specific.data.bitmaps[0].flags[0]:",
                          "expected a string, got null")


QMP_DEEP: list[tuple[str, Callable[[list[dict[str, Any]]], None], list[str]]] = [
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
]


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "return"])
@pytest.mark.parametrize("mutate, needles", [c[1:] for c in QMP_DEEP], ids=[c[0] for c in QMP_DEEP])
def test_qmp_wrong_type_deep_inside(wrapped: bool, mutate: Callable[[list[dict[str, Any]]], None],
                                    needles: list[str], tmp_path: Path) -> None:
    nodes = qmp_nodes()
    assert nodes[0]["node-name"] == "libvirt-1-format"
    mutate(nodes)
    value: Any = {"return": nodes} if wrapped else nodes
    for via in VIAS:
        run, where = run_value(via, value, tmp_path)
        prefix = "return" if wrapped else ""
        first, *rest = needles
        assert_one_line_error(run, where, f"{where}: {prefix}{first}", *rest)


# ------------------------------------------------------------ duplicates, loops

@pytest.mark.parametrize("via", VIAS)
def test_two_bitmaps_of_one_name_in_a_layer_qemu_img(via: str, tmp_path: Path) -> None:
    doc = chain()
    doc[0]["format-specific"]["data"]["bitmaps"].append(bitmap("a", "auto"))
    run, where = run_value(via, doc, tmp_path)
    assert_one_line_error(run, where, "[0].format-specific.data.bitmaps[2]:",
                          "a second bitmap named 'a' in one layer")


@pytest.mark.parametrize("via", VIAS)
def test_two_bitmaps_of_one_name_in_a_layer_qmp(via: str, tmp_path: Path) -> None:
    nodes = qmp_nodes()
    nodes[0]["dirty-bitmaps"].append(copy.deepcopy(nodes[0]["dirty-bitmaps"][0]))
    run, where = run_value(via, nodes, tmp_path)
    assert_one_line_error(run, where, "[0].dirty-bitmaps[5]:", "a second bitmap named 'current'")


def test_same_name_in_two_layers_is_fine() -> None:
    assert kbrules("check", "-", stdin=json.dumps(chain()).encode()).code == 0


def test_qmp_two_format_nodes_for_one_file() -> None:
    """A twin that holds the same bitmaps cannot change a verdict: it is no error
    (test_qmp.py); one that holds other bitmaps leaves the chain ambiguous."""
    nodes = qmp_nodes()
    twin = copy.deepcopy(nodes[0])
    twin["node-name"] = "twin-format"
    twin["dirty-bitmaps"][0]["recording"] = not twin["dirty-bitmaps"][0]["recording"]
    assert_one_line_error(kbrules("check", "-", stdin=json.dumps(nodes + [twin]).encode()),
                          "two format nodes for file '/tmp/bitmaps.qcow2'",
                          "'libvirt-1-format'", "'twin-format'", "different bitmaps", "--domain")


def test_qmp_backing_loop() -> None:
    nodes = qmp_nodes()
    nodes[0]["image"]["backing-filename"] = nodes[0]["file"]
    assert_one_line_error(kbrules("check", "-", stdin=json.dumps(nodes).encode()), "loop")


def test_qmp_backing_loop_below_the_top() -> None:
    a = {"node-name": "a", "drv": "qcow2", "file": "a.qcow2", "image": {"backing-filename": "b.qcow2"}}
    b = {"node-name": "b", "drv": "qcow2", "file": "b.qcow2", "image": {"backing-filename": "c.qcow2"}}
    c = {"node-name": "c", "drv": "qcow2", "file": "c.qcow2", "image": {"backing-filename": "b.qcow2"}}
    assert_one_line_error(kbrules("check", "-", stdin=json.dumps([a, b, c]).encode()),
                          "backing loop at 'b.qcow2'")


# ------------------------------------------------------------ paths, encodings

def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "top.qcow2"
    assert_one_line_error(kbrules("check", str(missing)), str(missing), "no such file")


def test_missing_json_path(tmp_path: Path) -> None:
    missing = tmp_path / "chain.json"
    assert_one_line_error(kbrules("check", str(missing), "--format", "json"), str(missing),
                          "no such file")


def test_directory(tmp_path: Path) -> None:
    assert_one_line_error(kbrules("check", str(tmp_path)), str(tmp_path), "is a directory")


def test_unreadable_file(tmp_path: Path) -> None:
    import os
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / "chain.json"
    path.write_text("[]")
    path.chmod(0)
    assert_one_line_error(kbrules("check", str(path)), str(path), "permission denied")


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("data, needles", [
    (b"\xff\xfe{}", ["not UTF-8 text (byte 0", "UTF-16 byte order mark"]),
    ('{"filename": "café.qcow2", "format": "qcow2"}'.encode("latin-1"), ["not UTF-8 text (byte 17"]),
    ('{"filename": "d\u00e9j\u00e0.qcow2", "format": "qcow2"}'.encode("cp1252"), ["not UTF-8 text"]),
    ('[{"filename": "a", "format": "raw"}]'.encode("utf-16"), ["not UTF-8", "UTF-16 byte order mark"]),
    # Without a BOM, UTF-16 is valid UTF-8 (NUL is a character): JSON refuses it.
    ('[{"filename": "a", "format": "raw"}]'.encode("utf-16-be"), ["not JSON", "line 1 column 1"]),
    (b'{"filename": "a\x80b", "format": "qcow2"}', ["not UTF-8 text (byte 15"]),
], ids=["ff-fe", "latin-1", "cp1252", "utf-16-bom", "utf-16-be-no-bom", "stray-byte"])
def test_not_utf8(via: str, data: bytes, needles: list[str], tmp_path: Path) -> None:
    run, where = run_input(via, data, tmp_path)
    assert_one_line_error(run, where, *needles)


@pytest.mark.parametrize("via", VIAS)
def test_utf8_bom_is_skipped(via: str, tmp_path: Path) -> None:
    """A UTF-8 byte order mark (Windows tools write one; qemu never does) is skipped, as
    jq skips it: the same report as without it."""
    doc = json.dumps(chain()).encode()
    with_bom, _ = run_input(via, b"\xef\xbb\xbf" + doc, tmp_path, "--format", "json")
    without, _ = run_input(via, doc, tmp_path, "--format", "json")
    assert with_bom.code == without.code == 0 and with_bom.err == ""
    assert with_bom.json() == without.json() and with_bom.json()["bitmaps"]


@pytest.mark.parametrize("via", ["stdin", "file.json"])
@pytest.mark.parametrize("data", [b"[" * 100000, b'{"a":' * 100000, b"[" * 100000 + b"]" * 100000,
                                  b'{"filename": "a", "format": "qcow2", "x": ' + b"[" * 50000 + b"]" * 50000 + b"}"],
                         ids=["open-arrays", "open-objects", "closed-arrays", "deep-unknown-key"])
def test_deeply_nested_json(via: str, data: bytes, tmp_path: Path) -> None:
    run, where = run_input(via, data, tmp_path)
    assert_one_line_error(run, where)
    assert "nested too deeply" in run.err or "truncated JSON" in run.err


def test_nested_a_little_is_ignored_where_unknown() -> None:
    doc = chain()
    doc[0]["children"] = json.loads("[" * 200 + "]" * 200)
    assert kbrules("check", "-", stdin=json.dumps(doc).encode()).code == 0


def test_huge_integer() -> None:
    """Python refuses int() of over 4300 digits with a ValueError: not a traceback."""
    doc = json.dumps(chain()).replace('"virtual-size": 1048576', '"virtual-size": ' + "9" * 5000)
    assert_one_line_error(kbrules("check", "-", stdin=doc.encode()), "<stdin>", "unreadable JSON")


@pytest.mark.parametrize("where, doc, path", [
    ("filename", '{"filename": "\\ud800.qcow2", "format": "qcow2"}', "filename:"),
    ("bitmap", json.dumps(chain()).replace('"name": "b"', '"name": "b\\udc80"'),
     "[0].format-specific.data.bitmaps[1].name:"),
    ("key", '[{"filename": "a", "format": "raw", "x": {"\\udfff": 1}}]', "[0].x (a key):"),
    ("top", '"\\ud83d"', "top level:"),
])
def test_lone_surrogate_escape(where: str, doc: str, path: str) -> None:
    """A \\ud800-\\udfff escape without its pair is not text: printing it later would
    raise UnicodeEncodeError (a traceback, with the JSON report half written)."""
    run = kbrules("check", "-", "--format", "json", stdin=doc.encode())
    assert_one_line_error(run, f"<stdin>: {path}", "lone UTF-16 surrogate")


def test_surrogate_pair_is_fine() -> None:
    doc = json.dumps(chain()).replace('"name": "b"', '"name": "b\\ud83d\\ude00"')
    run = kbrules("check", "-", "--format", "json", stdin=doc.encode())
    assert run.code == 0 and "b\U0001F600" in [b["name"] for b in run.json()["bitmaps"]]


def test_lone_surrogate_through_a_real_stdout(tmp_path: Path) -> None:
    """The real console: before the fix this printed half a report and a traceback."""
    path = tmp_path / "chain.json"
    path.write_text('{"filename": "\\ud800", "format": "raw"}')
    done = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(path), "--format", "json"],
                          capture_output=True, text=True, errors="replace")
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_json_without_suffix_is_an_image_with_a_note(tmp_path: Path) -> None:
    """A path is JSON by its name or by --json, never by its bytes (a guest writes the
    bytes of its disk). JSON text named otherwise, even UTF-16 as Windows PowerShell 5
    writes it, is a raw image to qemu-img, and a note on stderr says how to read it."""
    for name, data in (("nodes.txt", json.dumps(qmp_nodes()).encode("utf-16")),
                       ("chain", json.dumps(chain()).encode())):
        path = tmp_path / name
        path.write_bytes(data)
        run = kbrules("check", str(path), "--format", "json")
        assert run.code == 0 and [(l["filename"], l["format"]) for l in run.json()["chain"]] == [(str(path), "raw")]
        assert run.err.count("\n") == 1 and "starts like JSON text" in run.err and "--json" in run.err
    assert_one_line_error(kbrules("check", "--json", str(tmp_path / "nodes.txt")), "nodes.txt", "UTF-16")


# ------------------------------------------------------------ command lines

@pytest.mark.parametrize("argv, needles", [
    (["check", "-", "--format", "xml"], ["--format", "invalid choice: 'xml'"]),
    (["check", "-", "--frobnicate"], ["unrecognized arguments: --frobnicate"]),
    (["check", "-", "-Z"], ["unrecognized arguments: -Z"]),
    (["--frobnicate"], ["--frobnicate"]),
    (["lint", "-"], ["invalid choice: 'lint'"]),
    (["check", "-", "--bitmap"], ["--bitmap", "expected one argument"]),
    (["check", "-", "--top"], ["--top", "expected one argument"]),
    (["check", "-", "-"], ["standard input (-) can be read only once"]),
    (["check", "a.json", "--jobs", "0"], ["--jobs must be 1 or more"]),
    (["check", "-", "--image-format", "qcow2"], ["--image-format needs an image path, not -"]),
    (["check", "-", "-f", "raw", "--format", "json"], ["--image-format needs an image path"]),
    (["check", "a.img", "--json", "-f", "raw"], ["--json and --image-format contradict each other"]),
    (["check", "-", "--timeout", "0"], ["--timeout must be more than 0 seconds"]),
    (["check", "-", "--max-json-size", "12X"], ["--max-json-size", "not a size: '12X'"]),
])
def test_bad_command_line(argv: list[str], needles: list[str]) -> None:
    run = kbrules(*argv, stdin=json.dumps(chain()).encode())
    assert_one_line_error(run, *needles)


def test_top_with_an_image_path(tmp_path: Path) -> None:
    top = make_chain(tmp_path, [{"a": "ok"}])[0]
    assert_one_line_error(kbrules("check", str(top), "--top", "libvirt-1-format"),
                          "--top applies to QMP input, not to an image")


def test_image_format_on_a_json_file_reads_it_as_an_image(tmp_path: Path) -> None:
    """-f forces PATH to be an image: kbrules then refuses the JSON file as qcow2."""
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(chain()))
    run = kbrules("check", str(path), "-f", "qcow2")
    assert_one_line_error(run, str(path), "is not a valid qcow2 image (given with --image-format)")


def test_no_subcommand() -> None:
    assert_one_line_error(kbrules(), "no command given", "kbrules check")


def test_no_subcommand_exits_2_without_traceback() -> None:
    run = kbrules()
    assert run.code == 2 and "Traceback" not in run.err


# ------------------------------------------------------------ help and version

def _exiting(*argv: str) -> tuple[int, str, str]:
    """main() for options that end in argparse's sys.exit (--help, --version)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with pytest.raises(SystemExit) as stop:
            main(list(argv))
    code = stop.value.code
    return (0 if code is None else int(code)), out.getvalue(), err.getvalue()


def test_check_help_exits_0_and_gives_the_exit_codes() -> None:
    code, out, err = _exiting("check", "--help")
    assert code == 0 and err == ""
    text = " ".join(out.split())
    assert "exit status: 0 no error finding, 1 at least one error finding" in text
    assert "2 the input, the command line, qemu-img or the output failed" in text
    assert "130 and 143 interrupted (SIGINT, SIGTERM); 141 the reader of the output went away" in text


def test_help_exits_0() -> None:
    code, out, err = _exiting("--help")
    assert code == 0 and err == "" and "check" in out


def test_help_mentions_the_exit_codes() -> None:
    _, out, _ = _exiting("--help")
    assert "exit status" in out and "2" in out


def test_version() -> None:
    code, out, err = _exiting("--version")
    assert code == 0 and out.strip() == f"kbrules {__version__}" and err == ""
    assert __version__ != "0+unknown"


def test_console_script_help_and_version() -> None:
    """The real entry point, in a real process: exit codes as the shell sees them."""
    for argv, needle in ((["--help"], "check"), (["check", "--help"], "exit status"),
                         (["--version"], "kbrules ")):
        done = subprocess.run([sys.executable, "-m", "engine.cli", *argv],
                              capture_output=True, text=True)
        assert done.returncode == 0 and needle in done.stdout and done.stderr == "", argv


def test_batch_with_bad_inputs_reports_each_and_checks_the_rest(tmp_path: Path) -> None:
    """Several inputs: a bad one is reported (one line on stderr, an 'error' entry)
    and the others are still checked; the exit code is the worst of all."""
    good = tmp_path / "good.json"
    good.write_text(json.dumps(chain()))
    empty = tmp_path / "empty.json"
    empty.write_text("")
    run = kbrules("check", str(good), str(tmp_path / "missing.json"), str(empty), "--format", "jsonl")
    assert run.code == 2
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert [e["input"] for e in lines] == [str(good), str(tmp_path / "missing.json"), str(empty)]
    assert "bitmaps" in lines[0] and "no such file" in lines[1]["error"] and "empty input" in lines[2]["error"]
    assert run.err.count("\n") == 2 and "Traceback" not in run.err
