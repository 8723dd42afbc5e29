"""What rules are checked on: the subject kinds and their facts, one table.

Each subject kind (a bitmap name, one copy of it, a layer, a libvirt checkpoint) is
built from a Chain as a small context; each fact is computed from that context, in
Python and in jq, side by side in the table below, the way engine/ops.py holds the
operations. A fact's Python is the text of an expression over its context's fields,
each a name of its own (``len(copies)``), so that the Python engine can compile it
into its rule functions (engine/pybackend.py); build() makes its dicts of facts from
the same texts. Both builders, the types that rules are checked against, and the docs'
list of facts come from this table, so a fact cannot be in one and missing from
another.

The contexts, in Python (NamedTuples below) and in jq (built by the kb_*_contexts
definitions of jqbackend.PRELUDE from the normalized chain):

- bitmap: ``name``, ``copies`` (its copies, top first; in jq only what the facts
  need of them: ``first``, the first one's layer, ``count`` and ``granularities``),
  ``complete`` (the input reaches the base), ``last`` (index of the last layer),
  ``checkpointed`` (a checkpoint of the domain names it for this disk; null without a
  domain);
- copy: the bitmap, its ``layer`` and ``above`` (how many layers above hold the
  bitmap). In jq a copy is a small array, as the chain's layers hold them, plus its
  ``above``: ``[name, layer, flags, granularity, above]`` where ``flags`` is
  recording + 2 inconsistent + 4 persistent + 8 busy (a whole chain of copies is
  sorted and scanned as arrays far faster than as objects);
- layer: ``layer`` (the Layer), ``below`` (the next Layer, or null), ``above``
  (bitmaps in the layers above, all together) and ``held`` (another program had it
  open read-write when read: true, false, or null when unknown);
- checkpoint: ``checkpoint`` (the Checkpoint), ``entry`` (its entry for this disk, or
  null) and ``disks`` (the domain's disk targets).

One pass over the chain builds them all: the cost stays linear in the input.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Sequence

from .model import Bitmap, Chain, Checkpoint, CheckpointDisk, Domain, Layer
from .ops import BOOLEAN, INTEGER, NULL, PY_HELPERS, STRING, Types


class BitmapContext(NamedTuple):
    name: str
    copies: list["CopyContext"]
    complete: bool
    last: int
    checkpointed: Optional[bool]
    present: tuple[str, ...]  # every bitmap name the chain holds, sorted


ALIKE = 5  # names that a bitmap no layer holds is compared with, at most


def _bigrams(name: str) -> set[str]:
    return {name[i:i + 2] for i in range(len(name) - 1)} if len(name) > 1 else {name}


def alike(name: str, present: Sequence[str]) -> str:
    """The names present, most like `name` first (Dice's coefficient of their
    character pairs, then code point order), ALIKE of them at most: what someone who
    mistyped `name` meant. jq computes the same (kb_alike)."""
    if not present:
        return "no bitmap at all"
    mine = _bigrams(name)

    def score(other: str) -> float:
        theirs = _bigrams(other)
        return 2 * len(mine & theirs) / (len(mine) + len(theirs))

    ranked = sorted(present, key=lambda other: (-score(other), other))
    more = f", and {len(ranked) - ALIKE} more" if len(ranked) > ALIKE else ""
    return ", ".join(f"'{n}'" for n in ranked[:ALIKE]) + more


class CopyContext(NamedTuple):
    bitmap: Bitmap
    layer: int
    above: int


class LayerContext(NamedTuple):
    layer: Layer
    below: Optional[Layer]
    above: int
    held: Optional[bool]


class CheckpointContext(NamedTuple):
    checkpoint: Checkpoint
    entry: Optional[CheckpointDisk]
    disks: tuple[str, ...]


# Each kind's context: its fields are the names that its facts' Python texts read.
CONTEXTS: dict[str, Any] = {"bitmap": BitmapContext, "copy": CopyContext, "layer": LayerContext,
                            "checkpoint": CheckpointContext}

# A context field whose value many subjects share: normalize makes one Bitmap of equal
# bitmap entries, which a chain holds in layer after layer. A rule whose facts read
# only it is checked once per value (engine/pybackend.py).
SHARED: dict[str, str] = {"copy": "bitmap"}


def _covers(entry: Optional[CheckpointDisk]) -> bool:
    return entry is not None and entry.checkpoint == "bitmap"


# What a fact's Python text may call, besides Python's builtins and its context's fields.
FACT_HELPERS: dict[str, Any] = {**PY_HELPERS, "covers": _covers, "alike": alike}


@dataclass(frozen=True)
class Fact:
    """A fact of a subject kind: its type, its doc, its Python and its jq."""

    name: str  # a Python identifier
    types: Types
    doc: str
    py: str  # Python text of an expression over the context's fields (and FACT_HELPERS)
    jq: str  # jq text of the same, applied to the context as `.`


@dataclass(frozen=True)
class Kind:
    """A kind of subject that rules are checked on, with its facts."""

    name: str
    doc: str  # "each ...": what a rule of this subject is checked on, once each
    facts: tuple[Fact, ...]
    # Where its findings go in the report: under the bitmap or the checkpoint of that
    # name, or (None) with the chain's findings.
    group: Optional[str]

    def types(self) -> dict[str, Types]:
        return {f.name: f.types for f in self.facts}


def _t(*names: str) -> Types:
    return frozenset(names)


_BOOL, _INT, _STR = _t(BOOLEAN), _t(INTEGER), _t(STRING)
_INT_OR_NULL, _STR_OR_NULL, _BOOL_OR_NULL = _t(INTEGER, NULL), _t(STRING, NULL), _t(BOOLEAN, NULL)

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("bitmap", "each bitmap name being checked", (
        Fact("name", _STR, "the bitmap's name", "name", ".name"),
        Fact("first_layer", _INT_OR_NULL, "the topmost layer holding it; null when no layer does",
             "copies[0].layer if copies else None", ".first"),
        Fact("copies", _INT, "how many layers hold it", "len(copies)", ".count"),
        Fact("chain_complete", _BOOL,
             "false when the last layer has a backing file missing from the input",
             "complete", ".complete"),
        Fact("last_layer", _INT, "the index of the last layer in the input", "last", ".last"),
        Fact("granularities", _INT, "how many different granularities its copies have",
             "len({c.bitmap.granularity for c in copies} - {None})",
             # Mostly one value: min and max tell it without sorting.
             ".granularities | min as $lo | max as $hi | if $lo == $hi then (if $lo == null then 0 else 1 end) "
             "else map(select(. != null)) | unique | length end"),
        Fact("alike", _STR, "for a bitmap that no layer holds, the names the chain holds, most "
             "alike first (what a mistyped name meant); empty when a layer holds it",
             '"" if copies else alike(name, present)',
             'if .count > 0 then "" else kb_alike(.name; .present) end'),
        Fact("has_checkpoint", _BOOL_OR_NULL,
             "a checkpoint of the libvirt domain names it for this disk; null without a domain",
             "checkpointed", ".checkpointed"),
    ), "bitmap"),
    Kind("copy", "each copy of a bitmap being checked, in every layer", (
        Fact("name", _STR, "the bitmap's name", "bitmap.name", ".[0]"),
        Fact("layer", _INT, "the layer holding this copy (0 is the top)", "layer", ".[1]"),
        Fact("copies_above", _INT, "how many layers above this one hold the bitmap",
             "above", ".[4]"),
        Fact("recording", _BOOL, "the copy tracks writes (qemu-img flag 'auto')",
             "bitmap.recording", ".[2] % 2 == 1"),
        Fact("inconsistent", _BOOL, "the copy was not saved cleanly (qemu-img flag 'in-use')",
             "bitmap.inconsistent", ".[2] % 4 >= 2"),
        Fact("persistent", _BOOL, "the copy is stored in the image (always so in qemu-img data)",
             "bitmap.persistent", ".[2] % 8 >= 4"),
        Fact("busy", _BOOL, "a block job is using the copy (QMP only)", "bitmap.busy", ".[2] >= 8"),
        Fact("granularity", _INT_OR_NULL, "bytes per bit; null when not given",
             "bitmap.granularity", ".[3]"),
    ), "bitmap"),
    Kind("layer", "each layer of the chain", (
        Fact("layer", _INT, "the layer's index (0 is the top)", "layer.layer", ".layer.layer"),
        Fact("format", _STR, "the image format: qcow2, raw...", "layer.format", ".layer.format"),
        Fact("compat", _STR_OR_NULL, "qcow2 version: \"1.1\" (v3) or \"0.10\" (v2); null for other formats",
             "layer.compat", ".layer.compat"),
        Fact("corrupt", _t(BOOLEAN, NULL), "the qcow2 corrupt flag; null for other formats",
             "layer.corrupt", ".layer.corrupt"),
        Fact("dirty", _BOOL, "the qcow2 dirty flag (unclean shutdown with lazy refcounts)",
             "layer.dirty", ".layer.dirty"),
        Fact("backing", _STR_OR_NULL, "the backing file, resolved as qemu opens it; null for a base",
             "layer.backing", ".layer.backing"),
        Fact("backing_recorded", _STR_OR_NULL,
             "the backing file's name as written in the image (may be relative)",
             "layer.backing_recorded", ".layer.backing_recorded"),
        Fact("below_format", _STR_OR_NULL, "the format of the next layer in the input; null for the last",
             "below.format if below is not None else None", ".below.format"),
        Fact("backing_format", _STR_OR_NULL, "the recorded backing format; null when qemu would probe it",
             "layer.backing_format", ".layer.backing_format"),
        Fact("bitmaps", _INT, "how many bitmaps this layer holds",
             "len(layer.bitmaps)", ".layer.bitmaps | length"),
        Fact("bitmaps_above", _INT, "how many bitmaps the layers above hold, all together",
             "above", ".above"),
        Fact("bitmaps_in_use", _INT, "how many of its bitmaps are inconsistent (qemu-img flag 'in-use')",
             "sum(b.inconsistent for b in layer.bitmaps)",
             "[.layer.bitmaps[][2] | select(. % 4 >= 2)] | length"),
        Fact("held", _BOOL_OR_NULL, "another program had the layer open read-write when it was "
             "read (its in-use flags then mean nothing); null when the input does not say",
             "held", ".held"),
    ), None),
    Kind("checkpoint", "each checkpoint of the libvirt domain", (
        Fact("name", _STR, "the checkpoint's name", "checkpoint.name", ".checkpoint.name"),
        Fact("bitmap", _STR_OR_NULL, "the name of its bitmap for this disk; null when it leaves the disk out",
             "entry.bitmap if covers(entry) else None",
             '.entry | if . != null and .checkpoint == "bitmap" then .bitmap else null end'),
        Fact("covers", _BOOL, "a bitmap of the checkpoint tracks this disk",
             "covers(entry)", '.entry != null and .entry.checkpoint == "bitmap"'),
        Fact("covered_disks", _INT, "how many disks a bitmap of the checkpoint tracks",
             "sum(d.checkpoint == 'bitmap' for d in checkpoint.disks)",
             '[.checkpoint.disks[] | select(.checkpoint == "bitmap")] | length'),
        Fact("gone_disks", _STR, "the disks it names that the domain no longer has, comma-separated; "
             "empty when none",
             "', '.join(d.name for d in checkpoint.disks if d.name not in disks)",
             '. as $c | [.checkpoint.disks[].name | select(. as $n | $c.disks | index([$n]) | not)] '
             '| join(", ")'),
    ), "checkpoint"),
)}

# Fields that a message or remediation template of any rule may name besides its
# subject's facts: of the layer the finding is about, and of the chain's domain.
class FindingContext(NamedTuple):
    layer: Layer
    domain: Optional[Domain]


FINDING_FIELDS: tuple[Fact, ...] = (
    Fact("filename", _STR, "the layer's file name", "layer.filename", ".layer.filename"),
    Fact("format", _STR, "the layer's format", "layer.format", ".layer.format"),
    Fact("node", _STR_OR_NULL, "the layer's QMP node-name; null for qemu-img input",
         "layer.node", ".layer.node"),
    Fact("domain", _STR_OR_NULL, "the libvirt domain's name; null without a domain",
         "domain.name if domain is not None else None", ".domain.name"),
    Fact("disk", _STR_OR_NULL, "the disk's target (vda...) in the libvirt domain; null without a domain",
         "domain.disk if domain is not None else None", ".domain.disk"),
)


# Python ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Subjects:
    """Every subject's facts, as dicts (build())."""

    names: tuple[str, ...]  # the bitmap names being checked, in report order
    by_kind: dict[str, list[dict[str, Any]]]  # kind -> each subject's facts


def unpack(context: Any) -> str:
    """Python text that gives each field of a context its own name, from `c`."""
    fields = context._fields
    clash = set(fields) & set(FACT_HELPERS)
    assert not clash, f"a context field would hide a helper: {clash}"
    return f"{', '.join(fields)}{',' if len(fields) == 1 else ''} = c"


@functools.lru_cache(maxsize=None)
def reads(fact: Fact, context: Any) -> frozenset[str]:
    """The fields of the context that a fact's Python text reads. (An attribute of the
    same name as a field counts too: a fact may look as if it read more than it does,
    never less.)"""
    names: set[str] = set()
    code = [compile(fact.py, f"<kbrules fact {fact.name}>", "eval")]
    while code:
        one = code.pop()
        names.update(one.co_names)
        code += [c for c in one.co_consts if hasattr(c, "co_names")]  # comprehensions
    return frozenset(names) & frozenset(context._fields)


@functools.lru_cache(maxsize=None)
def dict_maker(facts: tuple[Fact, ...], context: Any) -> Callable[[Any], dict[str, Any]]:
    """A function from a context to the dict of these facts, in the table's order,
    compiled from their Python texts."""
    items = ", ".join(f"{f.name!r}: ({f.py})" for f in facts)
    source = f"def facts(c):\n    {unpack(context)}\n    return {{{items}}}\n"
    namespace = dict(FACT_HELPERS)
    exec(compile(source, f"<kbrules facts of {context.__name__}>", "exec"), namespace)
    maker: Callable[[Any], dict[str, Any]] = namespace["facts"]
    return maker


_new = tuple.__new__


def held(chain: Chain, layer: Layer) -> Optional[bool]:
    """Whether another program had the layer open read-write when it was read."""
    if layer.shared_rw:
        return True
    return False if chain.read_locked or chain.source == "qmp" or chain.domain is not None else None


def checkpoint_bitmaps(chain: Chain) -> dict[str, str]:
    """Bitmap name -> the checkpoint that names it for the chain's disk."""
    if chain.domain is None:
        return {}
    disk = chain.domain.disk
    return {d.bitmap: c.name for c in chain.domain.checkpoints for d in c.disks
            if d.name == disk and d.checkpoint == "bitmap" and d.bitmap is not None}


def contexts(chain: Chain, requested: Optional[Sequence[str]]) -> tuple[tuple[str, ...], dict[str, list[Any]]]:
    """The names being checked (the requested ones, first occurrence, else every name
    in the chain and every name a checkpoint gives this disk, sorted) and every
    subject's context, by kind."""
    held_by: dict[str, list[CopyContext]] = {}  # name -> its copies, top first
    layers: list[LayerContext] = []
    wanted = set(requested) if requested else None
    total = 0  # bitmaps in the layers above
    for index, layer in enumerate(chain.layers):
        below = chain.layers[index + 1] if index + 1 < len(chain.layers) else None
        layers.append(LayerContext(layer, below, total, held(chain, layer)))
        total += len(layer.bitmaps)
        for b in layer.bitmaps:  # the hot loop: once per copy in the chain
            if wanted is None or b.name in wanted:
                copies = held_by.get(b.name)
                if copies is None:
                    copies = held_by[b.name] = []
                # CopyContext(b, ...), without the NamedTuple's constructor, a Python
                # function that would take most of this loop's time.
                copies.append(_new(CopyContext, (b, layer.layer, len(copies))))
    named = checkpoint_bitmaps(chain)
    # Without names asked for, every copy is in held_by.
    names = tuple(dict.fromkeys(requested)) if requested else tuple(sorted({**held_by, **named}))
    last = len(chain.layers) - 1
    checkpointed = (lambda n: n in named) if chain.domain is not None else (lambda n: None)
    # Every name the chain holds (for `alike`); without names asked for, held_by has them all.
    everything = tuple(sorted(held_by if wanted is None else
                              {b.name for layer in chain.layers for b in layer.bitmaps}))
    bitmaps = [BitmapContext(n, held_by.get(n, []), chain.complete, last, checkpointed(n), everything)
               for n in names]
    copies = [c for n in names for c in held_by.get(n, ())]
    points: list[CheckpointContext] = []
    if chain.domain is not None:
        disk = chain.domain.disk
        for c in chain.domain.checkpoints:
            entry = next((d for d in c.disks if d.name == disk), None)
            # With names asked for, only the checkpoints of those names.
            if wanted is None or c.name in wanted or (entry is not None and entry.bitmap in wanted):
                points.append(CheckpointContext(c, entry, chain.domain.disks))
    return names, {"bitmap": bitmaps, "copy": copies, "layer": layers, "checkpoint": points}


def build(chain: Chain, requested: Optional[Sequence[str]]) -> Subjects:
    """Every subject's facts, from the table, as dicts (the rule engine reads only the
    facts its rules need: engine/pybackend.py)."""
    names, by_kind = contexts(chain, requested)
    makers = {name: dict_maker(kind.facts, CONTEXTS[name]) for name, kind in KINDS.items()}
    return Subjects(names, {kind: [makers[kind](c) for c in found] for kind, found in by_kind.items()})


def finding_fields(layer: Layer, domain: Optional[Domain]) -> dict[str, Any]:
    return dict_maker(FINDING_FIELDS, FindingContext)(FindingContext(layer, domain))


# jq ----------------------------------------------------------------------------------

def _jq_object(facts: Sequence[Fact]) -> str:
    return "{ " + ", ".join(f"{json.dumps(f.name)}: ({f.jq})" for f in facts) + " }"


def jq_facts(kind: str) -> str:
    """jq text of a subject's facts object, made from its context (`.`)."""
    return _jq_object(KINDS[kind].facts)


def jq_finding_fields() -> str:
    """jq definition of kb_finding_fields: the template fields of a finding's context."""
    return f"def kb_finding_fields: {_jq_object(FINDING_FIELDS)};"
