"""Loading rules: the one way in is ``load_rules()``.

It finds the rule files (the shipped ones, or those asked for), parses the YAML,
validates it (a JSON Schema for the shape, then what a schema cannot say: unique ids,
known facts, operands of the right types, templates naming real fields), runs each
rule's own examples, and narrows the set by select/ignore (engine/pybackend.py then
compiles the rule set). Every problem is one RulesError: ``FILE:LINE: rule ID: what
is wrong``.

A file whose examples passed is remembered twice: in this process (by path, mtime and
size) and on disk (engine/cache.py, by content), so later runs skip the YAML parsing,
the schema and the examples. A shipped file that is unchanged since the tests checked
it (its digest is in rules/checked.sha256) needs neither its schema nor its examples
at start-up: ``kbrules test`` and the test suite check it.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from . import cache, ops
from .errors import InputError, RulesError, UsageError
from .model import ADVICE, SEVERITIES
from .normalize import context_from_json
from .rule import Example, Rule, Template
from .subjects import FINDING_FIELDS, KINDS


def rules_dir() -> Path:
    """The rules shipped with the package (engine.rules), or rules/ of a source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "rules", here.parent / "rules"):
        if candidate.is_dir():
            return candidate
    raise RulesError(f"no rules directory beside {here}")


def default_files() -> list[Path]:
    return sorted(rules_dir().glob("*.yaml"))


CHECKED = "checked.sha256"  # in rules_dir(): `sha256sum *.yaml` of the shipped files, as tested


@functools.lru_cache(maxsize=1)
def _checked() -> dict[str, str]:
    """File name -> the SHA-256 of its content, as the tests checked it."""
    try:
        lines = (rules_dir() / CHECKED).read_text().splitlines()
    except OSError:
        return {}
    return {name.lstrip("*"): digest for digest, _, name in (line.partition("  ") for line in lines)}


def shipped_unchanged(path: Path, content: bytes) -> bool:
    """Whether this is a shipped rules file as the tests checked it: its schema held and
    its examples passed, in both engines, with this kbrules (tests/test_rules.py keeps
    rules/checked.sha256 fresh, and CI runs kbrules test)."""
    if path.resolve().parent != rules_dir().resolve():
        return False
    return _checked().get(path.name) == hashlib.sha256(content).hexdigest()


def _schema() -> dict[str, Any]:
    text = {"type": "string", "minLength": 1}
    example = {
        "type": "object", "additionalProperties": False,
        "required": ["expect", "input"],
        "properties": {
            "expect": {"enum": ["pass", "fail"]},
            "bitmap": {"type": "string"},  # may be empty: a test of bad names
            "bitmaps": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "layers": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "input": {},
            "context": {"type": "object"},  # as jq's --argjson context: a libvirt domain...
        },
        "not": {"required": ["bitmap", "bitmaps"]},
    }
    rule = {
        "type": "object", "additionalProperties": False,
        "required": ["id", "title", "severity", "subject", "require", "statement", "message",
                     "remediation", "examples"],
        "properties": {
            "id": {"type": "string", "pattern": "^[a-z][a-z0-9]*(-[a-z0-9]+)*$"},
            "title": text, "statement": text, "message": text,
            # One text for every source, or one per advice: whose commands fit.
            "remediation": {"oneOf": [text, {"type": "object", "additionalProperties": False,
                                             "required": list(ADVICE),
                                             "properties": {a: text for a in ADVICE}}]},
            "severity": {"enum": list(SEVERITIES)},
            "subject": {"enum": list(KINDS)},
            # Expressions are checked by ops.typecheck, which says more than a schema can.
            "require": {}, "at": {},
            "examples": {"type": "array", "items": example, "minItems": 2},
        },
    }
    return {
        "type": "object", "additionalProperties": False,
        "required": ["article", "title", "rules"],
        "properties": {
            "article": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
            "title": text,
            "rules": {"type": "array", "items": rule, "minItems": 1},
        },
    }


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema  # only when a rules file is read for real, not from the cache

    return jsonschema.Draft202012Validator(_schema())


def _line(root: Any, path: Sequence[Any]) -> Optional[int]:
    """The 1-based line of the YAML node at a JSON path, as near as it can be found."""
    import yaml

    node, line = root, None
    for key in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
    return node.start_mark.line + 1 if node is not None else line


def _error(path: Path, line: Optional[int], data: Any, where: Sequence[Any], what: str) -> RulesError:
    """FILE:LINE: rule ID: what is wrong (LINE and the rule when they are known)."""
    rule = ""
    if len(where) >= 2 and where[0] == "rules" and isinstance(where[1], int):
        raw = data["rules"][where[1]]
        rid = raw.get("id") if isinstance(raw, dict) else None
        rule = f" rule {rid if isinstance(rid, str) else '#' + str(where[1] + 1)}:"
    return RulesError(f"{path}{':' + str(line) if line else ''}:{rule} {what}")


def _key(place: Sequence[Any]) -> str:
    return ".".join(map(str, place))


def _parse(path: Path, text: str, schema: bool = True) -> tuple[Any, dict[str, int]]:
    """YAML checked against the schema (unless told not to: a file the tests checked):
    the data, and the line of every place that later checks may name (rules.I,
    rules.I.KEY, rules.I.examples.K, and each part of an expression)."""
    import yaml  # only a file that is not in the cache is parsed

    # libyaml, when PyYAML has it: fifteen times as fast. One pass gives both the nodes
    # (for lines) and the data.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        root = loader.get_single_node()
        data: Any = None if root is None else loader.construct_document(root)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RulesError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    finally:
        loader.dispose()
    errors = list(_validator().iter_errors(data)) if schema else []
    if errors:
        import jsonschema

        # best_match picks the most specific error.
        err = jsonschema.exceptions.best_match(errors)
        place = list(err.absolute_path)
        raise _error(path, _line(root, place), data, place,
                     f"{_key(place) or 'top level'}: {err.message}")
    lines: dict[str, int] = {}
    for i, raw in enumerate(data["rules"]):
        places = [["rules", i]] + [["rules", i, key] for key in raw] + \
            [["rules", i, "examples", k] for k in range(len(raw["examples"]))] + \
            [["rules", i, key, *inner] for key in ("require", "at") if key in raw
             for inner in _inner_places(raw[key])]
        for place in places:
            line = _line(root, place)
            if line:
                lines[_key(place)] = line
    return data, lines


def _inner_places(expr: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every part of an expression, for line numbers of its errors."""
    out = [here] if here else []
    if isinstance(expr, dict):
        for name, arg in expr.items():
            if isinstance(arg, list):
                for i, e in enumerate(arg):
                    out += _inner_places(e, here + (name, i))
            else:
                out += _inner_places(arg, here + (name,))
    return out


@dataclass(frozen=True)
class _Places:
    """Where things are in one rules file, for errors that name FILE:LINE: rule ID."""

    path: Path
    data: Any
    lines: dict[str, int]

    def line(self, where: Sequence[Any]) -> Optional[int]:
        for n in range(len(where), 1, -1):  # the nearest place that has a line
            if _key(where[:n]) in self.lines:
                return self.lines[_key(where[:n])]
        return None

    def fail(self, where: Sequence[Any], what: str) -> RulesError:
        return _error(self.path, self.line(where), self.data, where, what)


def _build(path: Path, data: Any, lines: dict[str, int]) -> list[Rule]:
    """Rules from schema-valid data, after the checks a schema cannot make."""
    places = _Places(path, data, lines)
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(data["rules"]):
        if raw["id"] in seen:
            first = seen[raw["id"]]
            raise places.fail(["rules", i, "id"], f"duplicate id (also rule #{first + 1}, "
                                                  f"line {places.line(['rules', first])})")
        seen[raw["id"]] = i
        rules.append(_rule(places, i, raw))
    return rules


def _rule(places: _Places, i: int, raw: dict[str, Any]) -> Rule:
    here: list[Any] = ["rules", i]
    kind = KINDS[raw["subject"]]
    facts = kind.types()
    at = raw.get("at", {"field": "layer"})
    if "at" not in raw and "layer" not in facts:
        raise places.fail(here, f"subject '{kind.name}' has no 'layer' fact: say where findings are with 'at'")
    try:
        types = ops.typecheck(raw["require"], facts, kind.name, ("require",))
        ops.expect_condition(raw["require"], types, ("require",))
        ops.expect_layer(at, ops.typecheck(at, facts, kind.name, ("at",)), ("at",))
    except ops.ExprError as wrong:
        raise places.fail(here + list(wrong.path), f"{wrong.path[0]}: {wrong}") from None
    known = [*facts, *(f.name for f in FINDING_FIELDS if f.name not in facts)]
    message = _template(places, here + ["message"], raw["message"], known)
    advice = raw["remediation"]
    remediation = {a: _template(places, here + ["remediation"] + ([a] if isinstance(advice, dict) else []),
                                advice[a] if isinstance(advice, dict) else advice, known) for a in ADVICE}
    examples = []
    for k, e in enumerate(raw["examples"]):
        try:
            context = context_from_json(e.get("context", {}), "context")
        except InputError as err:
            raise places.fail(here + ["examples", k], f"example #{k + 1}: {err}") from None
        examples.append(Example(e["expect"], tuple(e["bitmaps"]) if "bitmaps" in e else
                                ((e["bitmap"],) if "bitmap" in e else ()), e["input"],
                                tuple(e["layers"]) if "layers" in e else None,
                                places.lines.get(f"rules.{i}.examples.{k}"), context))
    if {e.expect for e in examples} != {"pass", "fail"}:
        raise places.fail(here + ["examples"], "needs at least one passing and one failing example")
    return Rule(id=raw["id"], title=raw["title"], severity=raw["severity"], subject=kind.name,
                statement=raw["statement"], require=raw["require"], at=at, message=message,
                remediation=remediation, examples=tuple(examples), article=places.data["article"],
                source=str(places.path), line=places.line(here))


def _template(places: _Places, where: list[Any], text: str, known: Sequence[str]) -> Template:
    """A message or remediation template that names only known fields."""
    key = ".".join(map(str, where[2:]))
    try:
        template = Template.parse(text)
    except ValueError as e:
        raise places.fail(where, f"{key}: {e}") from None
    for f in template.fields():
        if f not in known:
            raise places.fail(where, f"{key} names unknown field '{{{f}}}' (known: {', '.join(known)})")
    return template


@dataclass(frozen=True)
class _File:
    """A rules file as read."""

    rules: tuple[Rule, ...]
    content: bytes  # as read: the cache's key
    entry: dict[str, Any]  # what the cache stores: the data and its lines
    cached: bool  # read from the cache: its examples passed before
    shipped: bool  # a shipped file as the tests checked it: its examples need not run


# Rule files read in this process, by (path, mtime, size) and whether the cache and
# rules/checked.sha256 were trusted: a process that checks many inputs reads each file
# once, and a changed file is read again.
_FILES: dict[tuple[tuple[str, int, int], bool], _File] = {}
_CHECKED: set[tuple[str, int, int]] = set()  # those whose examples passed here


def _read(path: Path, trust: bool) -> tuple[tuple[str, int, int], _File]:
    """A rules file, from the cache or a shipped file's record of being checked when
    `trust`, else parsed and validated afresh (for kbrules test, which checks it)."""
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if (key, trust) in _FILES:
            return key, _FILES[key, trust]
        content = path.read_bytes()
        text = content.decode("utf-8")
    except OSError as e:
        raise RulesError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise RulesError(f"{path}: not UTF-8 text (byte {e.start})") from None
    entry = cache.read(content) if trust else None
    rules = _from_cache(path, entry)
    cached = entry is not None and rules is not None
    shipped = trust and shipped_unchanged(path, content)
    if entry is None or rules is None:
        data, lines = _parse(path, text, schema=not shipped)
        entry = {"data": data, "lines": lines}
        rules = tuple(_build(path, data, lines))
    found = _File(rules, content, entry, cached, shipped)
    _FILES[key, trust] = found
    return key, found


def _from_cache(path: Path, entry: Optional[dict[str, Any]]) -> Optional[tuple[Rule, ...]]:
    """The rules of a cache entry; None when there is none, or when it does not build
    (an entry this kbrules did not write: ignored, never trusted)."""
    if entry is None:
        return None
    try:
        return tuple(_build(path, entry["data"], entry["lines"]))
    except Exception:
        return None


def _check_examples(found: _File) -> None:
    """A rule whose own examples fail makes its file broken (Python engine)."""
    from .examples import check_example  # only a file not checked before runs its examples

    for rule in found.rules:
        for number, example in enumerate(rule.examples, 1):
            problem = check_example(rule, example, number)
            if problem:
                raise RulesError(problem)


def load_rules(files: Optional[Sequence[Path]] = None, select: Sequence[str] = (),
               ignore: Sequence[str] = (), examples: bool = True) -> list[Rule]:
    """The rules of `files` (default: every shipped file), in file order, their ids
    unique across files. With `examples`, each file's examples have passed (once: then
    it is cached), or it is a shipped file as the tests checked it; without, each file
    is read and validated afresh, for the caller to run its examples (kbrules test, the
    docs' build). `select` keeps only those ids, `ignore` drops those."""
    rules: list[Rule] = []
    owner: dict[str, Rule] = {}
    for path in files or default_files():
        key, found = _read(Path(path), trust=examples)
        for rule in found.rules:
            if rule.id in owner:
                first = owner[rule.id]
                raise RulesError(f"{path}:{rule.line}: rule {rule.id}: id already used in "
                                 f"{first.source}:{first.line}")
            owner[rule.id] = rule
        if examples and not found.cached and key not in _CHECKED:
            if not found.shipped:
                _check_examples(found)
            _CHECKED.add(key)
            cache.write(found.content, found.entry)
        rules.extend(found.rules)
    if not rules:
        raise RulesError("no rules found")
    return choose(rules, select, ignore)


def choose(rules: Sequence[Rule], select: Sequence[str] = (), ignore: Sequence[str] = ()) -> list[Rule]:
    """`rules` narrowed to the `select` ids (all when empty) minus the `ignore` ids."""
    known = [r.id for r in rules]
    for option, ids in (("--select", select), ("--ignore", ignore)):
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise UsageError(f"{option}: unknown rule id {unknown[0]!r} (known: {', '.join(known)})")
    chosen = [r for r in rules if (not select or r.id in select) and r.id not in ignore]
    if not chosen:
        raise UsageError("no rule left to run after --select/--ignore")
    return chosen
