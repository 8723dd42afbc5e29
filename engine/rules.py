"""Loading rule files: YAML, checked against a JSON Schema and then for what a schema
cannot say (unique ids, known facts), compiled to Python."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from . import ops
from .errors import RulesError
from .subjects import FACTS, LAYER_FIELDS

SEVERITIES = ("error", "warning", "info")
FILTERS = ("sh",)


def rules_dir() -> Path:
    """The rules shipped with the package (engine.rules), or rules/ of a source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "rules", here.parent / "rules"):
        if candidate.is_dir():
            return candidate
    raise RulesError(f"no rules directory beside {here}")


def default_files() -> list[Path]:
    return sorted(rules_dir().glob("*.yaml"))


def tostring(value: Any) -> str:
    """jq's tostring: strings as they are, everything else as JSON text."""
    return value if isinstance(value, str) else json.dumps(value)


SH_ESCAPED = "'\\''"  # inside single quotes: close, an escaped quote, reopen


def sh_quote(value: Any) -> str:
    """A string for a POSIX shell: in single quotes, each ' written as '\\''."""
    return "'" + value.replace("'", SH_ESCAPED) + "'" if isinstance(value, str) else tostring(value)


@dataclass(frozen=True)
class Template:
    """Text with {field} and {field|sh} placeholders; {{ and }} are literal braces."""

    text: str  # as written in the rules file
    parts: tuple[tuple[str, Optional[str], Optional[str]], ...]  # (literal, field, filter)

    @staticmethod
    def parse(text: str) -> "Template":
        parts: list[tuple[str, Optional[str], Optional[str]]] = []
        try:
            for literal, field, spec, conv in string.Formatter().parse(text):
                if field is None:
                    parts.append((literal, None, None))
                    continue
                if spec or conv or not field:
                    raise ValueError(f"placeholder {{{field}}}: write {{field}} or {{field|sh}}")
                name, _, filt = field.partition("|")
                if filt and filt not in FILTERS:
                    raise ValueError(f"unknown filter '|{filt}' in {{{field}}}")
                parts.append((literal, name, filt or None))
        except ValueError as e:
            raise ValueError(f"bad template {text!r}: {e}") from None
        return Template(text, tuple(parts))

    def fields(self) -> list[str]:
        return [f for _, f, _ in self.parts if f is not None]

    def render(self, facts: dict[str, Any]) -> str:
        out = []
        for literal, field, filt in self.parts:
            out.append(literal)
            if field is not None:
                value = facts.get(field)
                out.append(sh_quote(value) if filt == "sh" else tostring(value))
        return "".join(out)


@dataclass(frozen=True)
class Example:
    expect: str  # "pass" or "fail"
    bitmaps: tuple[str, ...]
    input: Any
    layers: Optional[tuple[int, ...]]  # where a failing example's findings must be
    line: Optional[int] = None  # in the rules file


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: str
    subject: str
    statement: str
    require: Any  # the expression, as written
    at: Any  # expression of the finding's layer
    message: Template
    remediation: Template
    examples: tuple[Example, ...]
    article: str
    source: str  # the file it came from
    check: ops.Compiled
    layer_of: ops.Compiled
    checked: bool = False  # its examples are known to pass (read from the cache)


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
        },
        "not": {"required": ["bitmap", "bitmaps"]},
    }
    rule = {
        "type": "object", "additionalProperties": False,
        "required": ["id", "title", "severity", "subject", "require", "statement", "message",
                     "remediation", "examples"],
        "properties": {
            "id": {"type": "string", "pattern": "^[a-z][a-z0-9]*(-[a-z0-9]+)*$"},
            "title": text, "statement": text, "message": text, "remediation": text,
            "severity": {"enum": list(SEVERITIES)},
            "subject": {"enum": list(FACTS)},
            "require": {"$ref": "#/$defs/expr"},
            "at": {"$ref": "#/$defs/expr"},
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
        "$defs": {"expr": ops.expression_schema()},
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


def _parse(path: Path, text: str) -> tuple[Any, dict[str, int]]:
    """YAML checked against the schema: the data, and the line of every place that
    later checks may name (rules.I, rules.I.KEY, rules.I.examples.K)."""
    import yaml

    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RulesError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    errors = list(_validator().iter_errors(data))
    if errors:
        import jsonschema

        # best_match picks the most specific error among oneOf branches.
        err = jsonschema.exceptions.best_match(errors)
        place = list(err.absolute_path)
        raise _error(path, _line(root, place), data, place,
                     f"{'.'.join(map(str, place)) or 'top level'}: {err.message}")
    lines: dict[str, int] = {}
    for i, raw in enumerate(data["rules"]):
        places = [["rules", i]] + [["rules", i, key] for key in raw] + \
            [["rules", i, "examples", k] for k in range(len(raw["examples"]))]
        for place in places:
            line = _line(root, place)
            if line:
                lines[".".join(map(str, place))] = line
    return data, lines


def _build(path: Path, data: Any, lines: dict[str, int], checked: bool) -> list[Rule]:
    """Rules from schema-valid data, after the checks a schema cannot make."""
    def fail(where: Sequence[Any], what: str) -> RulesError:
        line = lines.get(".".join(map(str, where))) or lines.get(".".join(map(str, where[:2])))
        return _error(path, line, data, where, what)

    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(data["rules"]):
        here = ["rules", i]
        rid = raw["id"]
        if rid in seen:
            raise fail(here + ["id"], f"duplicate id (also rule #{seen[rid] + 1})")
        seen[rid] = i
        facts = FACTS[raw["subject"]]
        at = raw.get("at", {"field": "layer"})
        if "at" not in raw and "layer" not in facts:
            raise fail(here, f"subject '{raw['subject']}' has no 'layer' fact: say where findings are with 'at'")
        for key, expr in (("require", raw["require"]), ("at", at)):
            for f in ops.fields_used(expr):
                if f not in facts:
                    raise fail(here + [key], f"unknown fact '{f}' for subject "
                                             f"'{raw['subject']}' (known: {', '.join(facts)})")
        templates = {}
        for key in ("message", "remediation"):
            try:
                templates[key] = Template.parse(raw[key])
            except ValueError as e:
                raise fail(here + [key], f"{key}: {e}") from None
            for f in templates[key].fields():
                if f not in facts and f not in LAYER_FIELDS:
                    raise fail(here + [key], f"{key} names unknown field '{{{f}}}' (known: "
                                             f"{', '.join([*facts, *LAYER_FIELDS])})")
        examples = tuple(
            Example(e["expect"], tuple(e["bitmaps"]) if "bitmaps" in e else
                    ((e["bitmap"],) if "bitmap" in e else ()), e["input"],
                    tuple(e["layers"]) if "layers" in e else None,
                    lines.get(f"rules.{i}.examples.{k}"))
            for k, e in enumerate(raw["examples"]))
        if {e.expect for e in examples} != {"pass", "fail"}:
            raise fail(here + ["examples"], "needs at least one passing and one failing example")
        rules.append(Rule(
            id=rid, title=raw["title"], severity=raw["severity"], subject=raw["subject"],
            statement=raw["statement"], require=raw["require"], at=at,
            message=templates["message"], remediation=templates["remediation"],
            examples=examples, article=data["article"], source=str(path),
            check=ops.compile_py(raw["require"]), layer_of=ops.compile_py(at), checked=checked))
    return rules


# Loaded files by (path, mtime, size): a process that checks many inputs reads each
# rules file once, and a changed file is read again.
_LOADED: dict[tuple[str, int, int], list[Rule]] = {}


def load(path: Path) -> list[Rule]:
    """Every rule of one file, or a RulesError that names file, line and rule. A file
    whose examples passed once (see remember()) comes from the cache on disk, without
    parsing YAML or validating it again."""
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key in _LOADED:
            return list(_LOADED[key])
        content = path.read_bytes()
        text = content.decode("utf-8")
    except OSError as e:
        raise RulesError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise RulesError(f"{path}: not UTF-8 text (byte {e.start})") from None
    cached = _cache_read(content)
    if cached is not None:
        rules = _build(path, cached["data"], cached["lines"], checked=True)
    else:
        data, lines = _parse(path, text)
        rules = _build(path, data, lines, checked=False)
        _PARSED[str(path)] = (content, data, lines)
    _LOADED[key] = rules
    return list(rules)


# What remember() writes: the file's content as read, its data and lines.
_PARSED: dict[str, tuple[bytes, Any, dict[str, int]]] = {}


def remember(path: Path) -> None:
    """Cache a rules file whose examples have passed, keyed by its content and by the
    engine's own files (a change to either makes a new key). Best effort: a cache that
    cannot be written is only slower."""
    parsed = _PARSED.get(str(path))
    if parsed is None:
        return
    content, data, lines = parsed
    target = _cache_path(content)
    if target is None:
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"data": data, "lines": lines}))
        os.replace(tmp, target)
    except OSError:
        pass


def _cache_path(content: bytes) -> Optional[Path]:
    """$KBRULES_CACHE_DIR (empty: no cache), else $XDG_CACHE_HOME/kbrules or ~/.cache/kbrules."""
    base = os.environ.get("KBRULES_CACHE_DIR")
    if base == "":
        return None
    if base is None:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kbrules")
    digest = hashlib.sha256(_engine_stamp() + content).hexdigest()
    return Path(base) / f"rules-{digest[:32]}.json"


@functools.lru_cache(maxsize=1)
def _engine_stamp() -> bytes:
    here = Path(__file__).resolve().parent
    stamp = [f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in sorted(here.glob("*.py"))]
    return "\n".join(stamp).encode() + b"\n"


def _cache_read(content: bytes) -> Optional[dict[str, Any]]:
    target = _cache_path(content)
    if target is None:
        return None
    try:
        entry = json.loads(target.read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and {"data", "lines"} <= entry.keys() else None


def load_all(paths: Optional[Sequence[Path]] = None) -> list[Rule]:
    """Rules of several files; ids must be unique across them."""
    rules: list[Rule] = []
    owner: dict[str, str] = {}
    for path in paths or default_files():
        for rule in load(Path(path)):
            if rule.id in owner:
                raise RulesError(f"{path}: rule {rule.id}: id already used in {owner[rule.id]}")
            owner[rule.id] = rule.source
            rules.append(rule)
    if not rules:
        raise RulesError("no rules found")
    return rules
