"""The rule files: their own examples pass, and broken rule files give errors that
name the file, the line and the rule."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engine import loader
from engine.errors import RulesError
from engine.examples import ENGINES, check_example
from engine.loader import CHECKED, default_files, load_rules, rules_dir
from engine.rule import Template
from engine.text import sh_quote
from helpers import kbrules

RULES = load_rules()
EXAMPLES = [(r, e, i + 1) for r in RULES for i, e in enumerate(r.examples)]

IDS = {"bitmap-in-top", "bitmap-contiguous", "bitmap-recording", "bitmap-consistent",
       "bitmap-persistent"}


def test_stable_ids_exist() -> None:
    assert IDS <= {r.id for r in RULES}


def test_rules_ship_in_rules_dir() -> None:
    assert [p.name for p in default_files()] == ["checkpoints.yaml", "image-health.yaml",
                                                  "incremental-backup.yaml"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rule, example, number", EXAMPLES,
                         ids=[f"{r.id}-{e.expect}-{i}" for r, e, i in EXAMPLES])
def test_rule_example(rule, example, number, engine: str) -> None:
    assert check_example(rule, example, number, engine) is None


def test_kbrules_test_runs_every_example_in_both_engines() -> None:
    run = kbrules("test")
    runs = 2 * sum(len(r.examples) for r in RULES)
    assert run.code == 0, run.out
    assert run.out.splitlines()[-1] == f"{len(RULES)} rules, {runs} runs: {runs} passed, 0 failed"
    assert all(f"ok    {r.id}  " in run.out for r in RULES)


def test_a_wrong_example_is_caught() -> None:
    # The example runner must be able to fail: flip one example's expectation.
    rule = next(r for r in RULES if r.id == "bitmap-recording")
    passing = next(e for e in rule.examples if e.expect == "pass")
    from dataclasses import replace
    for engine in ENGINES:
        problem = check_example(rule, replace(passing, expect="fail"), 1, engine)
        assert problem is not None and "expected a finding, got none" in problem


GOOD = """\
article: demo
title: Demo
rules:
  - id: demo-rule
    title: Copies record
    severity: error
    subject: copy
    require: {field: recording}
    statement: Every copy records.
    message: "bitmap {name} stopped in layer {layer} ({filename})"
    remediation: "qemu-img bitmap --remove {filename|sh} {name|sh}"
    examples:
      - expect: pass
        bitmap: a
        input: {filename: t.qcow2, format: qcow2, virtual-size: 1048576, format-specific: {type: qcow2, data: {bitmaps: [{name: a, flags: [auto]}]}}}
      - expect: fail
        bitmap: a
        layers: [0]
        input: {filename: t.qcow2, format: qcow2, virtual-size: 1048576, format-specific: {type: qcow2, data: {bitmaps: [{name: a, flags: []}]}}}
"""


def _load(tmp_path: Path, text: str) -> list:
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return load_rules([path], examples=False)


def test_good_file_loads(tmp_path: Path) -> None:
    (rule,) = _load(tmp_path, GOOD)
    assert rule.id == "demo-rule" and rule.article == "demo"
    assert all(check_example(rule, e, i) is None for i, e in enumerate(rule.examples, 1))


@pytest.mark.parametrize("old, new, expected", [
    ("require: {field: recording}", "require: {frobnicate: recording}",
     r"demo.yaml:8: rule demo-rule: require: unknown operation 'frobnicate' \(known: field, not, all, any, eq, ne, lt, le, gt, ge, bytes\)$"),
    ("require: {field: recording}", "require: {field: colour}", r"demo.yaml:8: rule demo-rule: require: unknown fact 'colour' for subject 'copy' \(known: name, layer, "),
    ("message: \"bitmap {name}", "message: \"bitmap {nam}", r"demo.yaml:10: rule demo-rule: message names unknown field '\{nam\}'"),
    ("{filename|sh}", "{filename|upper}", r"demo.yaml:11: rule demo-rule: remediation: .*unknown filter"),
    ("    severity: error\n", "    severity: fatal\n", r"demo.yaml:6: rule demo-rule: rules.0.severity: 'fatal' is not one of"),
    ("    title: Copies record\n", "", r"demo.yaml:4: rule demo-rule: rules.0: 'title' is a required property"),
    ("subject: copy", "subject: bitmap", r"demo.yaml:4: rule demo-rule: subject 'bitmap' has no 'layer' fact"),
    ("subject: copy", "subject: bitmap\n    at: 0", r"demo.yaml:9: rule demo-rule: require: unknown fact 'recording' for subject 'bitmap'"),
    ("      - expect: pass\n", "      - expect: fail\n", r"rule demo-rule: needs at least one passing and one failing"),
    ("rules:\n", "rules: [\n", r"demo.yaml:\d+: not valid YAML"),
])
def test_broken_file_names_file_line_and_rule(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(RulesError, match=expected):
        _load(tmp_path, GOOD.replace(old, new, 1))


# Typed literals and operands: a rule that can never fire, or always does, is refused.
TYPED = [
    ('{eq: [{field: granularity}, "64k"]}',
     r"require: 'eq' compares fact 'granularity' \(integer or null\) with the literal \"64k\" \(string\): they are never equal"),
    ("{eq: [{field: layer}, null]}",
     r"require: 'eq' compares fact 'layer' \(integer\) with the literal null \(null\): they are never equal"),
    ("{field: name}", r"require: must be a condition \(true or false\), but fact 'name' is string"),
    ("{not: {field: layer}}", r"require: 'not' needs a condition \(true or false\), but fact 'layer' is integer"),
    ("{any: [{field: recording}, 1]}", r"require: 'any' needs a condition .* but the literal 1 is integer"),
    ("{lt: [{field: name}, 3]}", r"require: 'lt' orders fact 'name' \(string\) and the literal 3 \(integer\)"),
    ("{gt: [{bytes: {field: layer}}, 0]}", r"require: 'bytes' measures a string, but fact 'layer' is integer"),
    ("{eq: [{field: layer}]}", r"require: 'eq' takes a list of 2 operands, got 1"),
    ("{eq: {field: layer}}", r"require: 'eq' takes a list of 2 operands, got no list"),
    ("{all: []}", r"require: 'all' takes a list of one or more operands, got 0"),
    ("{not: {field: busy}, all: [true]}", r"require: an operation is a mapping with one key, got 2 keys \(not, all\)"),
    ("{not: {field: [busy]}}", r"require: 'field' takes the name of a fact"),
    ("[true]", r"require: expected a literal \(string, number, boolean, null\) or an operation"),
]


@pytest.mark.parametrize("require, expected", TYPED, ids=[t for t, _ in TYPED])
def test_ill_typed_require_is_refused(tmp_path: Path, require: str, expected: str) -> None:
    with pytest.raises(RulesError, match=r"demo.yaml:8: rule demo-rule: " + expected):
        _load(tmp_path, GOOD.replace("require: {field: recording}", f"require: {require}"))


def test_at_must_be_a_layer_index(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"demo.yaml:9: rule demo-rule: at: must be a layer index "
                                         r"\(integer\), but fact 'name' is string"):
        _load(tmp_path, GOOD.replace("require: {field: recording}", "require: {field: recording}\n    at: {field: name}"))


def test_a_float_where_a_string_is_meant(tmp_path: Path) -> None:
    # compat: 0.10 is the number 0.1 in YAML, never equal to qemu-img's "0.10".
    text = GOOD.replace("subject: copy", "subject: layer").replace(
        "require: {field: recording}", "require:\n      all:\n        - {field: dirty}\n        - {ne: [{field: compat}, 0.10]}")
    with pytest.raises(RulesError, match=r"demo.yaml:11: rule demo-rule: require: 'ne' compares fact "
                                         r"'compat' \(string or null\) with the literal 0.1 \(number\): they are never equal"):
        _load(tmp_path, text)


def test_duplicate_id(tmp_path: Path) -> None:
    rule = GOOD[GOOD.index("  - id"):]
    with pytest.raises(RulesError, match=r"demo.yaml:\d+: rule demo-rule: duplicate id"):
        _load(tmp_path, GOOD + rule)


def test_template_render_and_quote() -> None:
    t = Template.parse("rm {name|sh} at {layer} {{literal}}")
    assert t.fields() == ["name", "layer"]
    assert t.render({"name": "it's", "layer": 2}) == "rm 'it'\\''s' at 2 {literal}"
    assert sh_quote("a b") == "'a b'"
    assert Template.parse("{x}").render({"x": None}) == "null"
    assert Template.parse("{x}").render({"x": True}) == "true"


def test_example_that_fails_its_rule(tmp_path: Path) -> None:
    # The passing example made to fail: the rules file is broken for every command
    # (FILE:LINE: rule ID, exit 2), and kbrules test reports it as a failure (exit 1).
    broken = GOOD.replace("data: {bitmaps: [{name: a, flags: [auto]}]}", "data: {bitmaps: [{name: a, flags: []}]}", 1)
    path = tmp_path / "demo.yaml"
    path.write_text(broken)
    chain = tmp_path / "chain.json"
    chain.write_text('{"filename": "t.qcow2", "format": "qcow2"}')
    for argv in (["check", str(chain), "--rules", str(path)], ["list", "--rules", str(path)],
                 ["jq", "--rules", str(path)], ["explain", "demo-rule", "--rules", str(path)]):
        run = kbrules(*argv)
        assert run.code == 2 and run.out == "", argv
        assert run.err == f"kbrules: {path}:13: rule demo-rule: example #1 (pass): expected no " \
                          f"finding, got findings at layers [0] (python)\n"
    run = kbrules("test", str(path))
    assert run.code == 1
    assert "FAIL  demo-rule" in run.out and run.out.splitlines()[-1] == "1 rule, 4 runs: 2 passed, 2 failed"


def test_ids_are_unique_across_files(tmp_path: Path) -> None:
    copy = tmp_path / "copy.yaml"
    original = next(p for p in default_files() if p.name == "incremental-backup.yaml")
    copy.write_text(original.read_text().replace("article: incremental-backup", "article: copy"))
    with pytest.raises(RulesError, match=r"copy.yaml:\d+: rule bitmap-exists: id already used in .*incremental-backup.yaml:\d+"):
        load_rules([original, copy])


def test_list_and_explain() -> None:
    run = kbrules("list")
    assert run.code == 0
    lines = run.out.splitlines()
    # One group per article: its path, then a table of its rules (titles may wrap).
    groups: dict[str, list[list[str]]] = {}
    for line in lines:
        if line.startswith("docs/kbase/"):
            article = line.rstrip(":")
            groups[article] = []
        elif line.startswith("  ") and line[2] != " ":
            groups[article].append(line.split())
    assert all(rows[0] == ["ID", "SEVERITY", "TITLE"] for rows in groups.values())
    rows = {row[0]: (article, row) for article, table in groups.items() for row in table[1:]}
    assert list(rows) == [r.id for r in RULES]
    assert rows["bitmap-persistent"][1][1] == "error" and rows["image-dirty"][1][1] == "warning"
    assert rows["image-dirty"][0] == "docs/kbase/image-health.rst"
    assert max(map(len, lines)) <= 80  # titles wrap to the width (80 when not a terminal)
    run = kbrules("explain", "bitmap-consistent")
    assert run.code == 0
    rule = next(r for r in RULES if r.id == "bitmap-consistent")
    assert run.out.startswith("bitmap-consistent (error): " + rule.title)
    assert "  2. fails, with a finding at layer 0 (bitmap a)" in run.out
    # Plain text: no reStructuredText quotes, no raw placeholders; the command whole,
    # on its own line, its placeholders in capitals.
    assert "``" not in run.out and "{" not in run.out.replace('{"', "")
    assert "\n  an image on disk (qemu-img):\n" in run.out
    assert "\n      qemu-img bitmap --remove -- FILENAME NAME\n" in run.out
    bad = kbrules("explain", "bitmap-nope")
    assert bad.code == 2 and "unknown rule id 'bitmap-nope'" in bad.err


# Shipped files as the tests checked them: their examples do not run at start-up.

def test_checked_digests_are_fresh() -> None:
    # This suite runs every shipped file's examples (and kbrules test, which validates
    # each file afresh): the digests it lists are of files that pass.
    listed = (rules_dir() / CHECKED).read_text()
    fresh = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in default_files())
    assert listed == fresh, (f"rules/{CHECKED} is stale: once kbrules test passes, "
                             f"run (cd rules && sha256sum *.yaml > {CHECKED})")


def test_a_shipped_file_is_trusted_only_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installation whose one rules file has an example that fails, yet is listed as
    # checked: listed, its examples are not run; changed by one byte, they are again.
    shipped = tmp_path / "rules"
    shipped.mkdir()
    demo = shipped / "demo.yaml"
    demo.write_text(GOOD.replace("data: {bitmaps: [{name: a, flags: [auto]}]}", "data: {bitmaps: [{name: a, flags: []}]}", 1))
    (shipped / CHECKED).write_text(f"{hashlib.sha256(demo.read_bytes()).hexdigest()}  demo.yaml\n")
    monkeypatch.setattr(loader, "rules_dir", lambda: shipped)
    monkeypatch.setattr(loader, "_FILES", {})
    monkeypatch.setattr(loader, "_CHECKED", set())
    monkeypatch.setenv("KBRULES_CACHE_DIR", "")
    loader._checked.cache_clear()
    try:
        assert [r.id for r in load_rules()] == ["demo-rule"]
        assert kbrules("list").code == 0
        # kbrules test checks it all the same.
        run = kbrules("test")
        assert run.code == 1 and "FAIL  demo-rule" in run.out
        demo.write_text(demo.read_text() + "# changed\n")
        with pytest.raises(RulesError, match=r"demo.yaml:13: rule demo-rule: example #1 \(pass\)"):
            load_rules()
    finally:
        loader._checked.cache_clear()
