"""The facts table (engine/subjects.py) is the one source of every fact: both
builders give exactly its facts, with the same values, and no fact is stuck at one
value (a fact added to the table with a computation missing in either language)."""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import jq as libjq
import pytest

from builders import bitmap, layer, qemu_img_chain, qmp_bitmap, qmp_disk
from engine import jqbackend, ops, subjects
from engine.model import Checkpoint, CheckpointDisk, Context, Domain
from engine.normalize import normalize
from helpers import LIBVIRT

Sample = tuple[Any, Optional[list[str]]]  # (input, requested names or None for all)

# A libvirt disk: vda, with checkpoints c1 (all disks left out), c2 (vda and a gone
# disk), c3 (vda only); its QMP nodes named by the domain.
DOMAIN = Domain("vm", "vda", True, ("vda",), (
    Checkpoint("c1", 1, None, (CheckpointDisk("vda", "no", None),)),
    Checkpoint("c2", 2, "c1", (CheckpointDisk("vda", "bitmap", "c2"), CheckpointDisk("vdb", "bitmap", "c2"))),
    Checkpoint("c3", 3, "c2", (CheckpointDisk("vda", "bitmap", "c3"),))))
DISK = Context(DOMAIN, ("vda-0-format", "vda-1-format"))

SAMPLES: list[Sample] = [
    # qemu-img: v3 over v2 over raw, a gap, mixed granularities, a probed format.
    ([layer("top.qcow2", [bitmap("a", "auto"), bitmap("b", "auto", granularity=512)], "mid.qcow2"),
      layer("mid.qcow2", [bitmap("b", "in-use", granularity=1 << 20)], "v2.qcow2", backing_format=None,
            dirty=True),
      layer("v2.qcow2", [], "base.raw", compat="0.10", backing_format="raw", corrupt=True),
      layer("base.raw", format="raw")], None),
    (qemu_img_chain([[bitmap("a", "auto")], [], [bitmap("a")]], incomplete=True), ["a", "gone"]),
    (layer("one.qcow2"), None),
    # QMP: transient, busy, inconsistent copies; a missing backing node.
    (qmp_disk([[qmp_bitmap("t", persistent=False), qmp_bitmap("x", busy=True)],
               [qmp_bitmap("x", recording=False, inconsistent=True, granularity=512)]]), None),
    (qmp_disk([[qmp_bitmap("y")]], incomplete=True), ["y"]),
    *[(json.loads((LIBVIRT / f"{name}.json").read_text()), None) for name in ("basic", "snapshots")],
]
# The same kinds of input, each with a context: a libvirt disk, or a locked read.
IN_CONTEXT: list[tuple[Any, Optional[list[str]], Context]] = [
    (qmp_disk([[qmp_bitmap("c2"), qmp_bitmap("stray")], [qmp_bitmap("c2", recording=False)]]), None, DISK),
    (qmp_disk([[qmp_bitmap("c3")], []]), ["c3"], DISK),
    (qemu_img_chain([[bitmap("a", "in-use")], [bitmap("a")]]), None, Context(read_locked=True)),
]



def _jq_subjects() -> Any:
    program = jqbackend.module([]) + (
        "\n.[0] as $v | .[1] as $req | .[2] as $ctx | $v | kb_careful(null; $ctx.nodes) | kb_subjects($req; $ctx)")
    return libjq.compile(program)


def fact_problems(samples: Sequence[tuple[Any, Optional[list[str]], Context]]) -> list[str]:
    """What is wrong with the table's facts on these samples: builders that disagree
    or give other keys, and facts that never take two different values."""
    program = _jq_subjects()
    problems: list[str] = []
    seen: dict[tuple[str, str], set[str]] = {}
    for value, names, context in samples:
        python = subjects.build(normalize(value, "sample", context=context), names).by_kind
        jq = program.input_value([value, names or [], context.to_json()]).first()
        for kind in subjects.KINDS.values():
            table = [f.name for f in kind.facts]
            for facts in python[kind.name] + jq[kind.name]:
                if list(facts) != table:
                    problems.append(f"{kind.name}: a builder gives {list(facts)}, the table {table}")
                for name, fact_value in facts.items():
                    seen.setdefault((kind.name, name), set()).add(json.dumps(fact_value))
            if not ops.jq_eq(python[kind.name], jq[kind.name]):
                problems.append(f"{kind.name}: Python {python[kind.name]} but jq {jq[kind.name]}")
    for kind in subjects.KINDS.values():
        for fact in kind.facts:
            values = seen.get((kind.name, fact.name), set())
            if len(values) < 2:
                problems.append(f"{kind.name}.{fact.name} is always {values or 'absent'}")
    return problems


ALL = [(value, names, Context()) for value, names in SAMPLES] + IN_CONTEXT


def test_every_fact_is_built_alike_and_varies() -> None:
    assert fact_problems(ALL) == []


def test_types_in_the_table_hold() -> None:
    for value, names, context in ALL:
        by_kind = subjects.build(normalize(value, "sample", context=context), names).by_kind
        for kind in subjects.KINDS.values():
            types = kind.types()
            for facts in by_kind[kind.name]:
                for name, fact_value in facts.items():
                    assert ops.type_of(fact_value) in types[name], (kind.name, name, fact_value)


def _broken(fact: subjects.Fact) -> dict[str, subjects.Kind]:
    kinds = dict(subjects.KINDS)
    copy = kinds["copy"]
    kinds["copy"] = subjects.Kind(copy.name, copy.doc, (*copy.facts, fact), copy.group)
    return kinds


@pytest.mark.parametrize("fact, says", [
    # Added to the table, but computed as nothing in both languages.
    (subjects.Fact("size", frozenset({"integer"}), "", "None", "null"), "copy.size is always"),
    # Computed in Python, forgotten in jq.
    (subjects.Fact("size", frozenset({"integer"}), "", "layer * 2", "null"),
     "copy: Python"),
])
def test_a_fact_missing_from_a_builder_is_caught(fact: subjects.Fact, says: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subjects, "KINDS", _broken(fact))
    problems = fact_problems(ALL)
    assert any(p.startswith(says) for p in problems), problems
