"""The rule set compiled to Python (engine/pybackend.py): what it gives is held to jq's
report by tests/test_jq.py; here, that it does no more work than its rules need."""

from __future__ import annotations

from typing import Any

import pytest

from builders import bitmap, qemu_img_chain
from engine import evaluate as evaluating
from engine import pybackend, subjects
from engine.evaluate import evaluate
from engine.loader import load_rules
from engine.normalize import normalize

RULES = load_rules()
# 100 layers, each with the same two bitmaps: "a" recording, "b" disabled.
CHAIN = normalize(qemu_img_chain([[bitmap("a", "auto"), bitmap("b")]] * 100), "chain")


def test_equal_bitmap_entries_are_one_bitmap() -> None:
    assert len({id(b) for layer in CHAIN.layers for b in layer.bitmaps}) == 2


def test_rules_that_read_only_a_bitmap_run_once_per_bitmap(monkeypatch: pytest.MonkeyPatch) -> None:
    program = pybackend.compile_rules(RULES)  # a program of its own: the cached one stays as it is
    namespace: dict[str, Any] = program.checks["copy"].__globals__
    checked: list[str] = []
    once = namespace["once_copy"]
    monkeypatch.setitem(namespace, "once_copy", lambda b: checked.append(b.name) or once(b))
    _, contexts = subjects.contexts(CHAIN, None)
    failed: list[tuple[str, int]] = []
    program.checks["copy"](contexts["copy"], lambda i, at, c: failed.append((RULES[i].id, at)))
    assert sorted(checked) == ["a", "b"]  # 200 copies
    assert failed == [("bitmap-recording", layer) for layer in range(100)]


def test_a_dict_of_facts_only_for_a_failing_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    facts = evaluating._facts
    monkeypatch.setattr(evaluating, "_facts", lambda kind, c: made.append(kind) or facts(kind, c))
    report = evaluate(CHAIN, RULES, ["a"])
    assert report.bitmaps[0].valid and made == []
    report = evaluate(CHAIN, RULES, ["b"])
    assert len(report.bitmaps[0].findings) == 100 and made == ["copy"] * 100


def test_each_kind_reads_only_the_facts_its_rules_name() -> None:
    for kind in subjects.KINDS.values():
        numbered = [(i, r) for i, r in enumerate(RULES) if r.subject == kind.name]
        named = {f"f_{n}" for _, r in numbered for n in pybackend._fields(r.require) | pybackend._fields(r.at)}
        source = pybackend.kind_source(kind, numbered)
        read = {line.split(" = ")[0].strip() for line in source.splitlines() if line.strip().startswith("f_")}
        assert read == named, kind.name
    assert "f_granularity" not in pybackend.program(RULES).source  # no copy rule reads it
