"""What rules are checked on: the subject kinds and their facts, one table.

Each subject kind (a bitmap name, one copy of it, a layer) is built from a Chain as a
small context; each fact is computed from that context, in Python and in jq, side by
side in the table below, the way engine/ops.py holds the operations. Both builders,
the types that rules are checked against, and the docs' list of facts come from this
table, so a fact cannot be in one and missing from another.

The contexts, in Python (NamedTuples below) and as the jq objects that
``jq_subjects()`` builds from the normalized chain (see jqbackend.PRELUDE):

- bitmap: ``name``, ``copies`` (its copies, top first), ``complete`` (the input
  reaches the base), ``last`` (index of the last layer);
- copy: the bitmap (Python: ``.bitmap``; jq: the bitmap object itself), its ``layer``
  and ``above`` (how many layers above hold the bitmap);
- layer: ``layer`` (the Layer), ``below`` (the next Layer, or null) and ``above``
  (bitmaps in the layers above, all together).

One pass over the chain builds them all: the cost stays linear in the input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Sequence

from .model import Bitmap, Chain, Layer
from .ops import BOOLEAN, INTEGER, NULL, STRING, Types


class BitmapContext(NamedTuple):
    name: str
    copies: list["CopyContext"]
    complete: bool
    last: int


class CopyContext(NamedTuple):
    bitmap: Bitmap
    layer: int
    above: int


class LayerContext(NamedTuple):
    layer: Layer
    below: Optional[Layer]
    above: int


@dataclass(frozen=True)
class Fact:
    name: str
    types: Types
    doc: str
    py: Callable[[Any], Any]  # of the subject's context
    jq: str  # jq text of the same, applied to the context as `.`


@dataclass(frozen=True)
class Kind:
    name: str
    doc: str  # "each ...": what a rule of this subject is checked on, once each
    facts: tuple[Fact, ...]

    def types(self) -> dict[str, Types]:
        return {f.name: f.types for f in self.facts}


def _t(*names: str) -> Types:
    return frozenset(names)


_BOOL, _INT, _STR = _t(BOOLEAN), _t(INTEGER), _t(STRING)
_INT_OR_NULL, _STR_OR_NULL = _t(INTEGER, NULL), _t(STRING, NULL)

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("bitmap", "each bitmap name being checked", (
        Fact("name", _STR, "the bitmap's name", lambda c: c.name, ".name"),
        Fact("first_layer", _INT_OR_NULL, "the topmost layer holding it; null when no layer does",
             lambda c: c.copies[0].layer if c.copies else None, ".copies[0].layer"),
        Fact("copies", _INT, "how many layers hold it", lambda c: len(c.copies), ".copies | length"),
        Fact("chain_complete", _BOOL,
             "false when the last layer has a backing file missing from the input",
             lambda c: c.complete, ".complete"),
        Fact("last_layer", _INT, "the index of the last layer in the input", lambda c: c.last, ".last"),
        Fact("granularities", _INT, "how many different granularities its copies have",
             lambda c: len({x.bitmap.granularity for x in c.copies if x.bitmap.granularity is not None}),
             "[.copies[].granularity | select(. != null)] | unique | length"),
    )),
    Kind("copy", "each copy of a bitmap being checked, in every layer", (
        Fact("name", _STR, "the bitmap's name", lambda c: c.bitmap.name, ".name"),
        Fact("layer", _INT, "the layer holding this copy (0 is the top)", lambda c: c.layer, ".layer"),
        Fact("copies_above", _INT, "how many layers above this one hold the bitmap",
             lambda c: c.above, ".above"),
        Fact("recording", _BOOL, "the copy tracks writes (qemu-img flag 'auto')",
             lambda c: c.bitmap.recording, ".recording"),
        Fact("inconsistent", _BOOL, "the copy was not saved cleanly (qemu-img flag 'in-use')",
             lambda c: c.bitmap.inconsistent, ".inconsistent"),
        Fact("persistent", _BOOL, "the copy is stored in the image (always so in qemu-img data)",
             lambda c: c.bitmap.persistent, ".persistent"),
        Fact("busy", _BOOL, "a block job is using the copy (QMP only)", lambda c: c.bitmap.busy, ".busy"),
        Fact("granularity", _INT_OR_NULL, "bytes per bit; null when not given",
             lambda c: c.bitmap.granularity, ".granularity"),
    )),
    Kind("layer", "each layer of the chain", (
        Fact("layer", _INT, "the layer's index (0 is the top)", lambda c: c.layer.layer, ".layer.layer"),
        Fact("format", _STR, "the image format: qcow2, raw...", lambda c: c.layer.format, ".layer.format"),
        Fact("compat", _STR_OR_NULL, "qcow2 version: \"1.1\" (v3) or \"0.10\" (v2); null for other formats",
             lambda c: c.layer.compat, ".layer.compat"),
        Fact("corrupt", _t(BOOLEAN, NULL), "the qcow2 corrupt flag; null for other formats",
             lambda c: c.layer.corrupt, ".layer.corrupt"),
        Fact("dirty", _BOOL, "the qcow2 dirty flag (unclean shutdown with lazy refcounts)",
             lambda c: c.layer.dirty, ".layer.dirty"),
        Fact("backing", _STR_OR_NULL, "the backing file, resolved as qemu opens it; null for a base",
             lambda c: c.layer.backing, ".layer.backing"),
        Fact("backing_recorded", _STR_OR_NULL,
             "the backing file's name as written in the image (may be relative)",
             lambda c: c.layer.backing_recorded, ".layer.backing_recorded"),
        Fact("below_format", _STR_OR_NULL, "the format of the next layer in the input; null for the last",
             lambda c: c.below.format if c.below is not None else None, ".below.format"),
        Fact("backing_format", _STR_OR_NULL, "the recorded backing format; null when qemu would probe it",
             lambda c: c.layer.backing_format, ".layer.backing_format"),
        Fact("bitmaps", _INT, "how many bitmaps this layer holds",
             lambda c: len(c.layer.bitmaps), ".layer.bitmaps | length"),
        Fact("bitmaps_above", _INT, "how many bitmaps the layers above hold, all together",
             lambda c: c.above, ".above"),
    )),
)}

# Fields of the layer a finding is about, which a message or remediation template of
# any rule may name besides its subject's facts (computed from the Layer).
LAYER_FIELDS: tuple[Fact, ...] = (
    Fact("filename", _STR, "the layer's file name", lambda l: l.filename, ".filename"),
    Fact("format", _STR, "the layer's format", lambda l: l.format, ".format"),
    Fact("node", _STR_OR_NULL, "the layer's QMP node-name; null for qemu-img input",
         lambda l: l.node, ".node"),
)


def grouped(kind: str) -> bool:
    """Findings on subjects of this kind belong to a bitmap (the subject has a name);
    the others are chain-level findings."""
    return any(f.name == "name" for f in KINDS[kind].facts)


# Python ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Subjects:
    names: tuple[str, ...]  # the bitmap names being checked, in report order
    by_kind: dict[str, list[dict[str, Any]]]  # kind -> each subject's facts


def _maker(kind: Kind) -> Callable[[Any], dict[str, Any]]:
    pairs = [(f.name, f.py) for f in kind.facts]
    return lambda context: {name: py(context) for name, py in pairs}


def contexts(chain: Chain, requested: Optional[Sequence[str]]) -> tuple[tuple[str, ...], dict[str, list[Any]]]:
    """The names being checked (the requested ones, first occurrence, else every name
    sorted) and every subject's context, by kind."""
    held: dict[str, list[CopyContext]] = {}  # name -> its copies, top first
    present: dict[str, None] = {}
    layers: list[LayerContext] = []
    wanted = set(requested) if requested else None
    total = 0  # bitmaps in the layers above
    for index, layer in enumerate(chain.layers):
        below = chain.layers[index + 1] if index + 1 < len(chain.layers) else None
        layers.append(LayerContext(layer, below, total))
        total += len(layer.bitmaps)
        for b in layer.bitmaps:
            present[b.name] = None
            if wanted is None or b.name in wanted:
                copies = held.setdefault(b.name, [])
                copies.append(CopyContext(b, layer.layer, len(copies)))
    names = tuple(dict.fromkeys(requested)) if requested else tuple(sorted(present))
    last = len(chain.layers) - 1
    bitmaps = [BitmapContext(n, held.get(n, []), chain.complete, last) for n in names]
    copies = [c for n in names for c in held.get(n, ())]
    return names, {"bitmap": bitmaps, "copy": copies, "layer": layers}


def build(chain: Chain, requested: Optional[Sequence[str]]) -> Subjects:
    """Every subject's facts, from the table."""
    names, by_kind = contexts(chain, requested)
    makers = {name: _maker(kind) for name, kind in KINDS.items()}
    return Subjects(names, {kind: [makers[kind](c) for c in found] for kind, found in by_kind.items()})


def layer_fields(layer: Layer) -> dict[str, Any]:
    return {f.name: f.py(layer) for f in LAYER_FIELDS}


# jq ----------------------------------------------------------------------------------

def _jq_object(facts: Sequence[Fact]) -> str:
    return "{ " + ", ".join(f"{json.dumps(f.name)}: ({f.jq})" for f in facts) + " }"


def jq_subjects() -> str:
    """jq definitions: kb_subjects($names), the same subjects as build(), on the chain
    that kb_chain normalizes (each bitmap object carries its layer); and
    kb_layer_fields, the template fields of a layer object."""
    facts = {name: _jq_object(kind.facts) for name, kind in KINDS.items()}
    return f"""
def kb_subjects($names):
  . as $chain
  | kb_by_name($names) as $groups
  | [ foreach (.layers[] | .bitmaps | length) as $n (0; . + $n; . - $n) ] as $above
  | {{ bitmap: [ $groups[]
                | {{ name, copies, complete: $chain.complete, last: (($chain.layers | length) - 1) }}
                | {facts["bitmap"]} ],
      copy: [ $groups[].copies | to_entries[] | .value + {{above: .key}}
              | {facts["copy"]} ],
      layer: [ $chain.layers[] | {{layer: ., below: $chain.layers[.layer + 1], above: $above[.layer]}}
               | {facts["layer"]} ] }};

def kb_layer_fields: {_jq_object(LAYER_FIELDS)};
"""
