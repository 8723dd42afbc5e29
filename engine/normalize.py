"""Parse and normalize inputs into a Chain: qemu-img info JSON (one image or
--backing-chain) or QMP query-named-block-nodes (bare or as a {"return": ...} reply).

Every error names the input and the JSON path of what is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any, Callable, Optional, Sequence

from .errors import InputError
from .model import Bitmap, Chain, Checkpoint, CheckpointDisk, Context, Domain, Layer
from .text import show

# Drivers that QMP reports for format nodes. Protocol nodes (file, host_device, nbd...)
# and filters share the `file` string of their format node and are skipped.
FORMAT_DRIVERS = frozenset(
    {"qcow2", "raw", "qed", "vmdk", "vdi", "vpc", "vhdx", "luks", "parallels", "qcow",
     "dmg", "bochs", "cloop"})

UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # text that Windows tools saved as UTF-16

SHAPES = ("expected qemu-img info --output=json (an object, or with --backing-chain an "
          "array of objects with 'filename' and 'format') or QMP query-named-block-nodes "
          "(an array of nodes with 'node-name', or {\"return\": [...]})")


def parse_json(data: bytes, where: str) -> Any:
    """Bytes to a JSON value, or one InputError saying why not."""
    try:
        text = data.decode("utf-8-sig")  # a leading UTF-8 BOM is skipped, as jq does
    except UnicodeDecodeError as e:
        bom = ", a UTF-16 byte order mark: convert it to UTF-8" if data.startswith(UTF16_BOMS) else ""
        raise InputError(f"{where}: not UTF-8 text (byte {e.start}{bom}); {SHAPES}") from None
    if not text or text.isspace():  # (not strip(): it would copy the whole text)
        raise InputError(f"{where}: empty input; {SHAPES}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        rest = text[e.pos:].rstrip()
        # Cut short: at the end, inside a string, or inside a literal (tru, nul...).
        cut = (not rest or e.msg.startswith("Unterminated string")
               or any(lit.startswith(rest) for lit in ("true", "false", "null")))
        what = "truncated JSON" if cut else "not JSON"
        raise InputError(f"{where}: {what} (line {e.lineno} column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise InputError(f"{where}: unreadable JSON: {str(e).split(':')[0]}") from None
    # A \ud800-\udfff escape without its pair decodes to a lone surrogate, which no
    # output can encode; only look when the text holds such an escape.
    if _SURROGATE_ESCAPE.search(text):
        bad = _lone_surrogate_at(value)
        if bad is not None:
            raise InputError(f"{where}: {bad.lstrip('.') or 'top level'}: a string holds a "
                             f"lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate_at(value: Any) -> Optional[str]:
    """The JSON path of a string (or of the object whose key) holding a lone surrogate;
    None if there is none. Iterative: the value may be nested deeply."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return path
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", x) for i, x in enumerate(v))
        elif isinstance(v, dict):
            for k, x in v.items():
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{path} (a key)"
                stack.append((f"{path}.{show(k)}", x))  # keys are input: escape them
    return None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


class _At:
    """A position in the input, for error messages."""

    def __init__(self, where: str, path: str = "") -> None:
        self.where, self.path = where, path

    def __truediv__(self, key: Any) -> "_At":
        return _At(self.where, f"{self.path}[{key}]" if isinstance(key, int) else f"{self.path}.{key}")

    def fail(self, what: str) -> InputError:
        return InputError(f"{self.where}: {self.path.lstrip('.') or 'top level'}: {what}")

    def get(self, obj: dict[str, Any], key: str, kind: type, required: bool = False) -> Any:
        """obj[key] if it has the given JSON kind; None when absent and optional."""
        if key not in obj or (obj[key] is None and not required):
            if required:
                raise self.fail(f"missing '{key}'")
            return None
        value = obj[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise (self / key).fail(f"expected {_kind(kind())}, got {_kind(value)}")
        return value

    def flag(self, obj: dict[str, Any], key: str) -> bool:
        """obj[key] if a boolean; a missing boolean means false."""
        return bool(self.get(obj, key, bool))

    def obj(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"expected an object, got {_kind(value)}")
        return value


def normalize(value: Any, where: str, top: Optional[str] = None,
              context: Optional[Context] = None) -> Chain:
    """Detect the input's kind and normalize it, in its context (a libvirt domain, the
    disk's QMP nodes, a locked read). `top` picks a QMP top node by name.
    Detection is exact: qemu-img info output is an object (or an array of them) with
    'filename', 'format' and 'virtual-size', which qemu-img always prints; QMP data is
    an array of nodes with 'node-name'. Anything else is refused, by name where it is
    a known look-alike."""
    if context is None:
        return _detect(value, _At(where), top, None)
    chain = _detect(value, _At(where), top, context.nodes)
    return replace(chain, domain=context.domain, read_locked=context.read_locked)


def _detect(value: Any, at: _At, top: Optional[str], chain: Optional[Sequence[str]]) -> Chain:
    where = at.where
    _refuse_look_alike(value, at)
    if isinstance(value, dict):
        if "error" in value and isinstance(value["error"], dict):
            err = value["error"]
            raise InputError(f"{where}: QMP error reply: {show(str(err.get('class', 'Error')))}: "
                             f"{show(str(err.get('desc', '(no description)')))}")
        if "return" in value:
            nodes = value["return"]
            if not isinstance(nodes, list):
                raise (at / "return").fail(f"a QMP reply to another command ({_kind(nodes)}, not an "
                                           f"array of block nodes); {SHAPES}")
            if nodes and all(isinstance(n, dict) and "node-name" not in n for n in nodes):
                raise (at / "return").fail(f"a QMP reply to another command (its entries have no "
                                           f"'node-name': they are not block nodes); {SHAPES}")
            return _qmp(nodes, at / "return", top, chain)
        if "filename" in value or "format" in value:
            return _qemu_img(_flatten(value, at), at, top)
        raise at.fail(f"an object with neither 'filename' nor 'return'; {SHAPES}")
    if isinstance(value, list):
        if not value:
            raise at.fail(f"an empty array; {SHAPES}")
        qmp = [isinstance(e, dict) and "node-name" in e for e in value]
        if all(qmp):
            return _qmp(value, at, top, chain)
        if any(qmp):
            raise (at / qmp.index(False)).fail("not a QMP block node (no 'node-name') among QMP nodes")
        return _qemu_img([(at / i, (at / i).obj(e)) for i, e in enumerate(value)], at, top)
    raise at.fail(f"{_kind(value)}; {SHAPES}")


def context_from_json(value: Any, where: str) -> Context:
    """A Context from its JSON (Context.to_json): what a rule's example or a jq user
    gives as the input's context."""
    at = _At(where)
    obj = at.obj(value)
    domain = None
    if obj.get("domain") is not None:
        here = at / "domain"
        d = here.obj(obj["domain"])
        domain = Domain(name=here.get(d, "name", str, required=True),
                        disk=here.get(d, "disk", str, required=True), running=here.flag(d, "running"),
                        disks=tuple(_strings(here, d, "disks")),
                        checkpoints=tuple(_checkpoint(here / "checkpoints" / i, c) for i, c
                                          in enumerate(here.get(d, "checkpoints", list) or [])),
                        connect=here.get(d, "connect", str))
    nodes = obj.get("nodes")
    return Context(domain, None if nodes is None else tuple(_strings(at, obj, "nodes")),
                   at.flag(obj, "read_locked"))


def _strings(at: _At, obj: dict[str, Any], key: str) -> list[str]:
    values = at.get(obj, key, list) or []
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise (at / key / i).fail(f"expected a string, got {_kind(v)}")
    return values


def _checkpoint(at: _At, value: Any) -> Checkpoint:
    c = at.obj(value)
    disks = []
    for i, entry in enumerate(at.get(c, "disks", list) or []):
        here = at / "disks" / i
        e = here.obj(entry)
        disks.append(CheckpointDisk(here.get(e, "name", str, required=True),
                                    here.get(e, "checkpoint", str, required=True), here.get(e, "bitmap", str)))
    return Checkpoint(at.get(c, "name", str, required=True), at.get(c, "created", int) or 0,
                      at.get(c, "parent", str), tuple(disks))


# JSON that other commands print, recognized by fields that they always have, so that
# the error says what the input is instead of what it lacks.
LOOK_ALIKES: tuple[tuple[str, Callable[[dict[str, Any]], bool]], ...] = (
    ("qemu-img check --output=json", lambda o: "check-errors" in o),
    ("qemu-img measure --output=json", lambda o: "required" in o and "fully-allocated" in o),
    ("qemu-img map --output=json", lambda o: {"start", "length", "depth"} <= o.keys()),
    ("QMP query-block; use query-named-block-nodes with \"flat\": true",
     lambda o: {"device", "locked", "removable"} <= o.keys()),
    ("a QMP greeting", lambda o: "QMP" in o),
    ("a QMP event", lambda o: "event" in o and "timestamp" in o),
)


def _refuse_look_alike(value: Any, at: _At) -> None:
    """An InputError naming what the input looks like, when it is a known look-alike:
    the whole value, a QMP reply's return, or the first entry of either."""
    here = at
    if isinstance(value, dict) and isinstance(value.get("return"), (list, dict)):
        value, here = value["return"], at / "return"
    first = value[0] if isinstance(value, list) and value else value
    if not isinstance(first, dict):
        return
    for what, test in LOOK_ALIKES:
        if test(first):
            raise here.fail(f"this looks like {what}, not what kbrules reads; {SHAPES}")


def _either(first: Optional[str], second: Optional[str]) -> Optional[str]:
    """first unless absent (jq's `//`: an empty string still counts)."""
    return first if first is not None else second


def _flatten(image: dict[str, Any], at: _At) -> list[tuple[_At, dict[str, Any]]]:
    """One image object, following nested 'backing-image' (as in QMP query-block)."""
    out = []
    while True:
        out.append((at, image))
        if "backing-image" not in image:
            return out
        at = at / "backing-image"
        image = at.obj(image["backing-image"])


def _qemu_img(images: list[tuple[_At, dict[str, Any]]], at: _At, top: Optional[str]) -> Chain:
    if top is not None:
        raise InputError(f"{at.where}: --top picks a node of QMP data; this is qemu-img info output")
    layers = []
    seen: dict[Any, Bitmap] = {}  # see _plain_bitmap
    for index, (here, image) in enumerate(images):
        filename = here.get(image, "filename", str, required=True)
        fmt = here.get(image, "format", str, required=True)
        here.get(image, "virtual-size", int, required=True)  # qemu-img always prints it
        facts, data = _image(here, image)
        bitmaps: tuple[Bitmap, ...] = ()
        if data is not None:
            dat = here / "format-specific" / "data"
            entries = dat.get(data, "bitmaps", list) or []
            bitmaps = _unique(dat / "bitmaps", [_plain_bitmap(b, seen) or _qemu_img_bitmap(dat / "bitmaps" / i, b)
                                                for i, b in enumerate(entries)])
        layers.append(Layer(layer=index, filename=filename, format=fmt, node=None,
                            bitmaps=bitmaps, **facts))
    return Chain("qemu-img", tuple(layers), complete=layers[-1].backing is None)


def _image(here: _At, image: dict[str, Any]) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """Layer facts from an ImageInfo object (qemu-img info, or 'image' of a QMP node),
    and its qcow2 data (None for other formats)."""
    data = None
    specific = here.get(image, "format-specific", dict)
    if specific is not None and specific.get("type") == "qcow2":
        data = (here / "format-specific").get(specific, "data", dict) or {}
    dat = here / "format-specific" / "data"
    facts = {
        "backing": _either(here.get(image, "full-backing-filename", str),
                           here.get(image, "backing-filename", str)),
        "backing_recorded": here.get(image, "backing-filename", str),
        "backing_format": here.get(image, "backing-filename-format", str),
        "dirty": here.flag(image, "dirty-flag"),
        "compat": dat.get(data, "compat", str) if data is not None else None,
        "corrupt": dat.get(data, "corrupt", bool) if data is not None else None,
    }
    return facts, data


def _plain_bitmap(entry: Any, seen: dict[Any, Bitmap]) -> Optional[Bitmap]:
    """The common, well-formed bitmap entry, without building error paths; None sends
    anything unusual to _qemu_img_bitmap, which says what is wrong. Equal entries give
    one Bitmap, kept in `seen` (the model is immutable): a chain holds the same bitmaps
    in layer after layer, and each is then built once, and checked once where a rule
    reads only the bitmap (engine/pybackend.py)."""
    if type(entry) is not dict:
        return None
    name, flags, granularity = entry.get("name"), entry.get("flags", []), entry.get("granularity")
    if type(name) is not str or type(flags) is not list or not (granularity is None or type(granularity) is int):
        return None
    key = (name, tuple(flags), granularity)
    try:
        bitmap = seen.get(key)  # only well-formed entries are kept: all their flags are strings
    except TypeError:  # an unhashable flag
        return None
    if bitmap is None:
        if any(type(f) is not str for f in flags):
            return None
        bitmap = seen[key] = Bitmap(name, "auto" in flags, "in-use" in flags, True, False, granularity)
    return bitmap


def _qemu_img_bitmap(at: _At, entry: Any) -> Bitmap:
    entry = at.obj(entry)
    flags = at.get(entry, "flags", list) or []
    for i, flag in enumerate(flags):
        if not isinstance(flag, str):
            raise (at / "flags" / i).fail(f"expected a string, got {_kind(flag)}")
    # In a qcow2 file: flag 'auto' = recording, 'in-use' = inconsistent, and every
    # stored bitmap is persistent by definition.
    return Bitmap(name=at.get(entry, "name", str, required=True),
                  recording="auto" in flags, inconsistent="in-use" in flags,
                  persistent=True, busy=False,
                  granularity=at.get(entry, "granularity", int))


# What a backup job puts above a disk's top node (QEMU 6.0 and later; older: backup-top).
JOB_FILTERS = frozenset({"copy-before-write", "backup-top"})

_Entry = tuple[_At, dict[str, Any]]


def _qmp(nodes: list[Any], at: _At, top: Optional[str],
         chain: Optional[Sequence[str]] = None) -> Chain:
    """The chain of one disk from QMP block nodes: the given `chain` of format node
    names (top first, as a libvirt domain's XML names them), else rebuilt from backing
    file names, starting at `top` or at the one format node no other names."""
    formats: list[_Entry] = []
    protected: set[str] = set()  # files under a backup job's filter: a disk's top
    for i, node in enumerate(nodes):
        here = at / i
        node = here.obj(node)
        here.get(node, "node-name", str, required=True)
        drv = here.get(node, "drv", str, required=True)
        file = here.get(node, "file", str, required=True)
        if drv in FORMAT_DRIVERS:
            formats.append((here, node))
        elif drv in JOB_FILTERS:
            protected.add(file)
    if not formats:
        raise at.fail("no format node (drv qcow2, raw, ...) among the QMP block nodes")
    facts = {id(node): _image(here / "image", here.get(node, "image", dict) or {})[0]
             for here, node in formats}

    def layer(index: int, entry: _Entry) -> Layer:
        here, node = entry
        return Layer(layer=index, filename=node["file"], format=node["drv"], node=node["node-name"],
                     bitmaps=_qmp_bitmaps(here, node), **facts[id(node)])

    if chain is not None:
        by_name = {node["node-name"]: (here, node) for here, node in formats}
        missing = [n for n in chain if n not in by_name]
        if missing:
            raise at.fail(f"no format node named {missing[0]!r} in the QMP data, though the "
                          f"domain's disk has it")
        named_layers = [layer(i, by_name[n]) for i, n in enumerate(chain)]
        return Chain("qmp", tuple(named_layers), complete=named_layers[-1].backing is None)

    # A backup job's scratch or target image names the disk's top as its backing
    # file: by backing names alone it would look like a new top. It is not a layer.
    disk = [e for e in formats if facts[id(e[1])]["backing"] not in protected]
    by_file = _one_per_file(disk, layer)
    named = {facts[id(node)]["backing"] for _, node in by_file.values()}
    tops = [e for file, e in by_file.items() if file not in named]
    if top is not None:
        picked = [e for e in formats if e[1]["node-name"] == top]
        if not picked:
            raise InputError(f"{at.where}: no format node named {top!r}; "
                             f"candidates: {_candidates(tops or formats)}")
        start = picked[0]
    elif len(tops) == 1:
        start = tops[0]
    elif not tops:
        raise at.fail("the backing files form a loop: no top node")
    else:
        raise InputError(f"{at.where}: {len(tops)} disks in this QMP data; pick one with "
                         f"--top NODE: {_candidates(tops)}")

    layers: list[Layer] = [layer(0, start)]
    seen = {start[1]["file"]}
    current = layers[0].backing
    while current is not None and current in by_file:
        if current in seen:
            raise at.fail(f"backing loop at {current!r}")
        seen.add(current)
        layers.append(layer(len(layers), by_file[current]))
        current = layers[-1].backing
    return Chain("qmp", tuple(layers), complete=current is None)


def _one_per_file(entries: list[_Entry], layer: Callable[[int, _Entry], Layer]) -> dict[str, _Entry]:
    """One format node per file. Two disks whose overlays share a base file each open
    it, so it has a format node per disk; they hold the same bitmaps, so either gives
    the same verdict. Nodes of one file that differ make the chain ambiguous."""
    out: dict[str, _Entry] = {}
    for entry in sorted(entries, key=lambda e: e[1]["node-name"]):
        file = entry[1]["file"]
        if file not in out:
            out[file] = entry
        elif replace(layer(0, entry), node=None) != replace(layer(0, out[file]), node=None):
            first, second = out[file][1]["node-name"], entry[1]["node-name"]
            raise entry[0].fail(f"two format nodes for file {file!r} ({first!r} and {second!r}) "
                                f"with different bitmaps: which belongs to this disk's chain only "
                                f"the domain knows (kbrules check --domain)")
    return out


def _candidates(entries: list[_Entry]) -> str:
    return ", ".join(f"{show(n['node-name'])} ({show(n['file'])})" for _, n in entries)


def _qmp_bitmaps(at: _At, node: dict[str, Any]) -> tuple[Bitmap, ...]:
    entries = at.get(node, "dirty-bitmaps", list) or []
    out = []
    for i, entry in enumerate(entries):
        here = at / "dirty-bitmaps" / i
        entry = here.obj(entry)
        if "name" not in entry:
            continue  # a backup job's own bitmap: libvirt skips them too
        status = here.get(entry, "status", str)  # QEMU < 4.0 had 'status', not 'recording'
        recording = here.flag(entry, "recording") if "recording" in entry or status is None \
            else status != "disabled"
        out.append(Bitmap(name=here.get(entry, "name", str, required=True),
                          recording=recording, inconsistent=here.flag(entry, "inconsistent"),
                          persistent=here.flag(entry, "persistent"),
                          busy=here.flag(entry, "busy") or status in ("frozen", "locked"),
                          granularity=here.get(entry, "granularity", int)))
    return _unique(at / "dirty-bitmaps", out)


def _unique(at: _At, bitmaps: list[Bitmap]) -> tuple[Bitmap, ...]:
    """A layer holds at most one bitmap of a name (qcow2 and QEMU enforce it)."""
    if len({b.name for b in bitmaps}) == len(bitmaps):  # the common case, at once
        return tuple(bitmaps)
    seen: set[str] = set()
    for i, b in enumerate(bitmaps):
        if b.name in seen:
            raise (at / i).fail(f"a second bitmap named {b.name!r} in one layer")
        seen.add(b.name)
    return tuple(bitmaps)
