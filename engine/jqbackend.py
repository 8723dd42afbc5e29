"""The jq backend: the rule files compiled into one self-contained jq program that
reads the same inputs as `kbrules check` and prints the same JSON report.

The program's parts mirror the Python pipeline: normalization (normalize.py),
subjects (subjects.py), each rule's check from the ops table (ops.py), findings,
verdicts and the report (evaluate.py, report.py). Values from the input never become
program text: bitmap names arrive as $ARGS.positional, the QMP top node as
$ARGS.named.top.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Optional, Sequence

from . import ops, subjects
from .model import SEVERITIES, Context
from .normalize import FORMAT_DRIVERS
from .rule import Rule, Template
from .text import SH_ESCAPED

# Normalization and subjects, in jq. Kept in the subset that jq 1.6, gojq and libjq 1.8
# share (see docs: no builtins added after 1.6, `if` always with `else`).
PRELUDE = r"""
def kb_fail($m): error("kbrules: " + $m);
def kb_truthy: . != null and . != false;

# Layer facts of an ImageInfo object (qemu-img info, or .image of a QMP node).
def kb_image:
  ((.["format-specific"] // {}) | if .type == "qcow2" then (.data // {}) else null end) as $q
  | { backing: (.["full-backing-filename"] // .["backing-filename"]),
      backing_recorded: .["backing-filename"],
      backing_format: .["backing-filename-format"],
      dirty: (.["dirty-flag"] == true),
      compat: ($q | if . != null then .compat else null end),
      corrupt: ($q | if . != null then .corrupt else null end) };

# qemu-img info --output=json: one image (maybe with nested backing-image) or an array.
def kb_qemu_img:
  (if type == "object" then [recurse(.["backing-image"] // empty)] else . end)
  | [ to_entries[] | .key as $i | .value
      | ((.["format-specific"] // {}) | if .type == "qcow2" then (.data // {}) else null end) as $q
      | { layer: $i, filename: .filename, format: .format, node: null, held: null,
          bitmaps: [ ($q // {}) | (.bitmaps // [])[] | (.flags // []) as $f
                     | { name: .name, layer: $i, recording: any($f[]; . == "auto"),
                         inconsistent: any($f[]; . == "in-use"), persistent: true,
                         busy: false, granularity: .granularity } ] } + kb_image ]
  | { source: "qemu-img", layers: ., complete: (.[-1].backing == null) };

# The bitmaps of a QMP format node in layer $i; nameless ones are a backup job's own,
# which libvirt skips too.
def kb_qmp_bitmaps($i):
  [ (.["dirty-bitmaps"] // [])[] | select(has("name"))
    | { name: .name, layer: $i,
        recording: (if has("recording") or .status == null then .recording == true
                    else .status != "disabled" end),
        inconsistent: (.inconsistent == true), persistent: (.persistent == true),
        busy: (.busy == true or .status == "frozen" or .status == "locked"),
        granularity: .granularity } ];

# QMP query-named-block-nodes: the chain of the format nodes $nodes (a libvirt disk's,
# top first), else rebuilt from backing file names from $top or the one top.
def kb_qmp($top; $nodes):
  (FORMAT_DRIVERS | map({(.): true}) | add) as $isfmt
  | [ .[] | select(.drv == "copy-before-write" or .drv == "backup-top") | .file ] as $protected
  | [ .[] | select($isfmt[.drv] == true) | . + { kb: ((.image // {}) | kb_image) } ] as $fmts
  | if ($fmts | length) == 0 then kb_fail("no format node (drv qcow2, raw, ...) among the QMP block nodes") else . end
  | (if $nodes != null then
       [ $nodes[] | . as $want
         | ([ $fmts[] | select(.["node-name"] == $want) ] | .[0])
           // kb_fail("no format node named " + ($want | tojson) + " in the QMP data, though the domain's disk has it") ]
     else
       # A backup job's scratch or target names the disk's top as its backing file.
       [ $fmts[] | select(.kb.backing as $b | $protected | index([$b]) | not) ] as $disk
       # One node per file: a base shared by two disks has a node per disk.
       | [ $disk | group_by(.file)[] | sort_by(.["node-name"])
           | ([ .[] | {drv, kb, b: kb_qmp_bitmaps(0)} ] | unique | length) as $kinds
           | if $kinds == 1 then .[0]
             else kb_fail("two format nodes for file " + (.[0].file | tojson) + " (" + (.[0]["node-name"] | tojson)
                          + " and " + (.[1]["node-name"] | tojson) + ") with different bitmaps: which belongs"
                          + " to this disk's chain only the domain knows (kbrules check --domain)") end ] as $files
       | (reduce $files[] as $n ({}; .[$n.file] = $n)) as $byfile
       | (reduce ($files[].kb.backing | select(. != null)) as $b ({}; .[$b] = true)) as $named
       | [ $files[] | select($named[.file] | not) ] as $tops
       | (if $top != null then
            ([ $fmts[] | select(.["node-name"] == $top) ] | if length > 0 then .[0]
             else kb_fail("no format node named " + ($top | tojson)) end)
          elif ($tops | length) == 1 then $tops[0]
          elif ($tops | length) == 0 then kb_fail("the backing files form a loop: no top node")
          else kb_fail(($tops | length | tostring) + " disks in this QMP data; pick one with --top NODE: "
                       + ([ $tops[] | .["node-name"] + " (" + .file + ")" ] | join(", "))) end) as $start
       | [ limit(($files | length) + 1; $start | recurse(if .kb.backing != null then ($byfile[.kb.backing] // empty) else empty end)) ]
       | if length > ($files | length) then kb_fail("backing loop") else . end
     end)
  | { source: "qmp",
      layers: [ to_entries[] | .key as $i | .value
        | { layer: $i, filename: .file, format: .drv, node: .["node-name"], held: false,
            bitmaps: kb_qmp_bitmaps($i) } + .kb ],
      complete: (.[-1].kb.backing == null) };

# $ctx: what kbrules knows besides the JSON (engine.model.Context): the libvirt
# domain and disk, the disk's QMP nodes, whether kbrules read the image with locks.
def kb_chain($top; $ctx):
  (if type == "object" and (.error | type) == "object" then
     kb_fail("QMP error reply: " + (.error.class // "Error") + ": " + (.error.desc // "(no description)"))
   elif type == "object" and has("return") then .return | kb_qmp($top; $ctx.nodes)
   elif type == "array" and length > 0 and all(.[]; type == "object" and has("node-name")) then kb_qmp($top; $ctx.nodes)
   elif $top != null then kb_fail("--top picks a node of QMP data; this is qemu-img info output")
   elif type == "object" or (type == "array" and length > 0) then kb_qemu_img
   else kb_fail("not qemu-img info or QMP query-named-block-nodes JSON") end)
  | .domain = ($ctx.domain // null)
  | (.domain != null or $ctx.read_locked == true) as $known
  | .layers |= map(.held = (if .held == false or $known then false else null end))
  | .advice = (if .domain != null then "libvirt" elif .source == "qmp" then "qmp" else "image" end);

# Bitmap name -> the checkpoint that names it for the chain's disk.
def kb_checkpoint_bitmaps:
  (.domain // {checkpoints: [], disk: null}) as $d
  | [ $d.checkpoints[] | .name as $c | .disks[]
      | select(.name == $d.disk and .checkpoint == "bitmap" and .bitmap != null) | {key: .bitmap, value: $c} ]
  | from_entries;

# Linear in every jq: no lookup objects or arrays grown inside `reduce` (jq 1.6 and gojq
# copy a nested array or object on each update, which is quadratic); grouping is done
# by sorting instead (group_by is stable, so copies stay in layer order).

# The names being checked: the requested ones (first occurrence), else every name,
# and every name that a checkpoint gives the disk, sorted.
def kb_names($req):
  if ($req | length) > 0 then
    $req | to_entries | group_by(.value) | map(.[0]) | sort_by(.key) | map(.value)
  else [ .layers[].bitmaps[].name, (kb_checkpoint_bitmaps | keys[]) ] | unique end;

# [{name, order, copies: [bitmap + {layer}, ...]}] for each checked name, in order.
def kb_by_name($names):
  [ ($names | to_entries[] | {name: .value, order: .key}),
    .layers[].bitmaps[] ]  # each bitmap knows its layer (see kb_qemu_img, kb_qmp)
  | group_by(.name)
  | map(select(.[0] | has("order")) | {name: .[0].name, order: .[0].order, copies: .[1:]})
  | sort_by(.order);

KB_SUBJECTS

# One finding of a subject (.) at layer $at; facts win over the finding's fields.
def kb_context($chain; $at): ({layer: $chain.layers[$at], domain: $chain.domain} | kb_finding_fields) + .;
"""

MAIN = r"""
def kb_verdicts($F; $names):
  [ [ ($names | to_entries[] | {name: .value, order: .key}), ($F[] | select(.group == "bitmap")) ]
    | group_by(.name)[]
    | (.[0].order) as $order
    | ([ .[1:][] ] | sort_by(.si, .ri, .layer) | map(del(.si, .ri, .name, .group))) as $found
    | { order: $order, name: .[0].name, valid: all($found[]; .severity != "error"), findings: $found } ]
  | sort_by(.order) | map(del(.order));

def kb_checkpoints($F; $points; $bitmaps):
  if ($points | length) == 0 then [] else
    ([ $bitmaps[] | {key: .name, value: .valid} ] | from_entries) as $valid
    | [ $points[] | .name as $n
        | ([ $F[] | select(.group == "checkpoint" and .name == $n) ] | sort_by(.si, .ri, .layer)
           | map(del(.si, .ri, .name, .group))) as $found
        | { name: .name, bitmap: .bitmap,
            usable: (.covers and all($found[]; .severity != "error") and ($valid[.bitmap // ""] == true)),
            findings: $found } ] end;

def kb_report($args):
  (($args.named.top) // null) as $top
| kb_chain($top; ($args.named.context // {})) as $chain
| ($chain | kb_names($args.positional // [])) as $names
| ($chain | kb_subjects($names; $args.positional // [])) as $S
| [ RULES ] as $F
| kb_verdicts($F; $names) as $bitmaps
| kb_checkpoints($F; $S.checkpoint; $bitmaps) as $points
| { source: $chain.source,
    trust_backing: false,
    chain: [ $chain.layers[] | {layer, filename, format, node} ],
    rules: RULE_IDS,
    bitmaps: $bitmaps,
    findings: [ $F[] | select(.group == null) ] | sort_by(.si, .ri, .layer) | map(del(.si, .ri, .name, .group)),
    domain: ($chain.domain | if . == null then null else {name, disk, running} end),
    checkpoints: $points,
    newest_usable_checkpoint: ([ $points[] | select(.usable) | .name ] | last) };
"""
# As a jq file: $ARGS holds --arg top NODE and --args NAME... .
ENTRY_CLI = "\nkb_report($ARGS)\n"
# Through the binding: the input and the arguments arrive together as [input, args],
# so the program compiles once (the binding binds variables at compile time).
ENTRY_BINDING = "\n.[1] as $args | .[0] | kb_report($args)\n"


def template_jq(template: Template) -> str:
    """jq text that renders the template against the finding's context (`.`)."""
    parts = []
    for literal, field, filt in template.parts:
        if literal:
            parts.append(json.dumps(literal))
        if field is not None:
            value = f".[{json.dumps(field)}]"
            # Not @sh: libjq 1.8 writes NUL as \0 there; split/join is the same in every
            # jq. Like text.sh_quote: in single quotes, each ' written as '\''.
            quoted = f"{json.dumps(chr(39))} + (split({json.dumps(chr(39))}) | join({json.dumps(SH_ESCAPED)})) + {json.dumps(chr(39))}"
            parts.append(f"({value} | if type == \"string\" then {quoted} else tostring end)"
                         if filt == "sh" else f"({value} | tostring)")
    return " + ".join(parts) or '""'


def rule_jq(rule: Rule, index: int) -> str:
    """jq text giving every finding of one rule, each tagged with its severity's and the
    rule's index (for ordering) and the bitmap name (for grouping; null for chain-level)."""
    group = subjects.KINDS[rule.subject].group
    if len({t.text for t in rule.remediation.values()}) == 1:
        advice = f"$c | {template_jq(next(iter(rule.remediation.values())))}"
    else:
        advice = " el".join(f"if $chain.advice == {json.dumps(a)} then ($c | {template_jq(t)})\n          "
                            for a, t in rule.remediation.items()) + "else null end"
    return (f"( $S[{json.dumps(rule.subject)}][] | select({ops.compile_jq(rule.require)} | kb_truthy | not)\n"
            f"    | ({ops.compile_jq(rule.at)}) as $at | kb_context($chain; $at) as $c\n"
            f"    | {{ rule: {json.dumps(rule.id)}, severity: {json.dumps(rule.severity)}, layer: $at,\n"
            f"        filename: $c.filename, message: ($c | {template_jq(rule.message)}),\n"
            f"        remediation: ({advice}), caveat: null,\n"
            f"        si: {SEVERITIES.index(rule.severity)}, ri: {index}, name: .name, "
            f"group: {json.dumps(group)} }} )")


def prelude() -> str:
    """Normalization and subjects in jq: every definition but the report's."""
    return PRELUDE.replace("FORMAT_DRIVERS", json.dumps(sorted(FORMAT_DRIVERS))).replace(
        "KB_SUBJECTS", subjects.jq_subjects())


def compile_program(rules: Sequence[Rule], header: str = "", entry: str = ENTRY_CLI) -> str:
    body = MAIN.replace("RULE_IDS", json.dumps([r.id for r in rules])).replace(
        "RULES", ",\n    ".join(rule_jq(r, i) for i, r in enumerate(rules)))
    return header + prelude() + body + entry


def binding(rules: Sequence[Rule]) -> Any:
    """The program compiled by the PyPI jq binding (libjq), ready for run()."""
    import jq  # imported here: only this path needs the binding

    return jq.compile(compile_program(rules, entry=ENTRY_BINDING))


def run(compiled: Any, value: Any, bitmaps: Optional[Sequence[str]] = None,
        top: Optional[str] = None, context: Optional[Context] = None) -> Any:
    """The report, as `jq -f PROGRAM --arg top TOP --argjson context CONTEXT --args
    BITMAPS...` would print it."""
    named: dict[str, Any] = {} if top is None else {"top": top}
    if context is not None:
        named["context"] = context.to_json()
    args = {"positional": list(bitmaps or []), "named": named}
    with _RUNNING:  # one compiled program is one jq state: not for two threads at once
        return compiled.input_value([value, args]).first()


_RUNNING = threading.Lock()


def header(rules: Sequence[Rule], source: str) -> str:
    """The comment block that opens a committed .jq file."""
    stem = source.rsplit("/", 1)[-1].removesuffix(".yaml")
    lines = [
        f"# {stem}.jq: GENERATED from {source} by `kbrules jq --rules {source}`.",
        "# Do not edit: change the YAML and regenerate (a test fails when this file is stale).",
        "#",
        "# Checks a qcow2 backing chain the way `kbrules check --format json` does, and prints",
        "# the same JSON report, with these rules:",
        *(f"#   {r.id} ({r.severity}): {r.title}" for r in rules),
        "#",
        "# Usage (jq 1.6 or later, gojq, or libjq):",
        f"#   qemu-img info --output=json --backing-chain top.qcow2 | jq -f {stem}.jq",
        f"#   jq -f {stem}.jq chain.json --args -- NAME...      only these bitmaps",
        "#   virsh qemu-monitor-command VM '{\"execute\":\"query-named-block-nodes\",\"arguments\":{\"flat\":true}}' \\",
        f"#     | jq -f {stem}.jq --arg top NODE                 QMP data of several disks",
        "# A bitmap is fit for an incremental backup when its entry says \"valid\": true;",
        f"#   ... | jq -f {stem}.jq | jq -e 'all(.bitmaps[]; .valid)'   exits 1 otherwise.",
        "",
    ]
    return "\n".join(lines)


def committed_program(rules: Sequence[Rule], stem: str) -> str:
    """The committed rules/<stem>.jq, made from the rules of rules/<stem>.yaml."""
    return compile_program(rules, header=header(rules, f"rules/{stem}.yaml"))
