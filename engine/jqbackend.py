"""The jq backend: the rule files compiled into one self-contained jq program that
reads the same inputs as `kbrules check`, refuses the same bad input with the same
one-line message, and prints the same JSON report.

The program's parts mirror the Python pipeline: normalization (normalize.py, written
again in jq, refusals included), subjects (subjects.py), each rule's check from the
ops table (ops.py), findings, verdicts and the report (evaluate.py, report.py).
Values from the input never become program text: bitmap names arrive as
$ARGS.positional, the QMP top node as $ARGS.named.top, the input's name for messages
as $ARGS.named.input (default: the file jq reads, or <stdin>).

Two forms: the module (definitions only: `include "kbrules"; kbrules_report`) and
the program (the module and one line that runs it on $ARGS, for `jq -f`).

Speed (jq 1.6 has no profiler; bench/jqparts.py times the program cut into parts):
a bitmap copy is a small array [name, layer, flags, granularity], never an object,
so that every copy of the chain is grouped by one C `sort`; a rule is checked on
each copy only when its requirement reads more than the flags (then a table of the
16 flag combinations answers) or the name (then once per name); `and`/`or` stop at
the first operand that decides. Normalizing a qemu-img --backing-chain array takes a
fast path that only notices that something is off; on any surprise, the careful
path (an exact port of engine/normalize.py) starts over and says what and where.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Optional, Sequence

from . import ops, subjects
from .errors import InputError
from .model import SEVERITIES, Context
from .normalize import FORMAT_DRIVERS, JOB_FILTERS, LOOK_ALIKES, SHAPES
from .rule import Rule, Template
from .text import SH_ESCAPED

# The keys that make each of normalize.LOOK_ALIKES, in its order (a test holds them
# to its tests).
LOOK_ALIKE_KEYS: tuple[tuple[str, ...], ...] = (
    ("check-errors",), ("required", "fully-allocated"), ("start", "length", "depth"),
    ("device", "locked", "removable"), ("QMP",), ("event", "timestamp"))

# Code points above ASCII that Python's repr() escapes, whatever its Unicode version
# (categories Cc, Cf, Zs, Zl, Zp, Co and surrogates, as of Unicode 15.1). Unassigned
# code points, which repr() escapes too, are not listed: they change with Python's
# Unicode version.
NOT_PRINTABLE = (
    (0x80, 0xA0), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70F, 0x70F),
    (0x890, 0x891), (0x8E2, 0x8E2), (0x1680, 0x1680), (0x180E, 0x180E), (0x2000, 0x200F),
    (0x2028, 0x202F), (0x205F, 0x2064), (0x2066, 0x206F), (0x3000, 0x3000), (0xD800, 0xF8FF),
    (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
    (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
    (0xE0020, 0xE007F), (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD))

# Code points that engine.text.show escapes, whatever Python's Unicode version
# (categories Cc, Cf and surrogates, as of Unicode 15.1; unassigned ones aside, as above).
HIDDEN = (
    (0x0, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200F),
    (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xD800, 0xDFFF), (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F))

# The flags of a qemu-img bitmap entry, as jq's tojson writes them, that the fast path
# knows: their flags number (recording + 2 inconsistent + 4 persistent; a qcow2 bitmap
# is always persistent). Any other list takes the careful path.
QEMU_IMG_FLAGS = {"null": 4, "[]": 4, '["auto"]': 5, '["in-use"]': 6, '["in-use","auto"]': 7,
                  '["auto","in-use"]': 7}

# Facts of a copy that its flags number holds: a rule reading only these is checked
# once per combination, not once per copy. A rule reading only the name is checked
# once per name.
FLAG_FACTS = frozenset({"recording", "inconsistent", "persistent", "busy"})
NAME_FACTS = frozenset({"name"})

# Kept to the subset that jq 1.6, gojq and libjq 1.7/1.8 share (see docs/jq.rst: no
# builtins added after 1.6, `if` always with `else`).
PRELUDE = r"""
# ------------------------------------------------------------------ messages
# Word for word as the Python engine writes them (engine/normalize.py, engine/text.py).

def kb_kind: {"object": "an object", "array": "an array", "string": "a string", "boolean": "a boolean",
              "null": "null", "number": "a number"}[type];

def kb_hex($width): . as $n
  | [ [268435456, 16777216, 1048576, 65536, 4096, 256, 16, 1][8 - $width:][]
      | ($n / . | floor) % 16 | "0123456789abcdef"[.:. + 1] ] | join("");

def kb_hidden: . as $c | (. < 32) or (. > 126 and any(@HIDDEN@[]; $c >= .[0] and $c <= .[1]));

# engine.text.show: control and format characters escaped, as JSON escapes them (a
# code point above U+FFFF as its UTF-16 surrogate pair).
def kb_show:
  if any(explode[]; kb_hidden) | not then . else
    [ explode[] | if kb_hidden | not then [.] | implode
                  elif . < 65536 then ({"8": "\\b", "9": "\\t", "10": "\\n", "12": "\\f", "13": "\\r"}[tostring]
                                       // ("\\u" + kb_hex(4)))
                  else (. - 65536) as $v | "\\u" + (55296 + ($v / 1024 | floor) | kb_hex(4))
                       + "\\u" + (56320 + $v % 1024 | kb_hex(4)) end ] | join("") end;

# Python's repr() of a string, as its messages quote names.
def kb_repr:
  (if index("'") != null and index("\"") == null then "\"" else "'" end) as $q
  | ($q | explode[0]) as $qc
  | $q + ([ explode[] | . as $c
            | if . == $qc or . == 92 then "\\" + ([.] | implode)
              elif . == 9 then "\\t" elif . == 10 then "\\n" elif . == 13 then "\\r"
              elif . < 32 or . == 127 then "\\x" + kb_hex(2)
              elif . < 127 or all(@NOT_PRINTABLE@[]; $c < .[0] or $c > .[1]) then [.] | implode
              elif . < 256 then "\\x" + kb_hex(2)
              elif . < 65536 then "\\u" + kb_hex(4)
              else "\\U" + kb_hex(8) end ] | join("")) + $q;

# Python's str() of a JSON value, for what a QMP error reply holds (exact for strings,
# null, booleans and integers).
def kb_pystr: if type == "string" then . elif . == null then "None" elif . == true then "True"
              elif . == false then "False" else tojson end;

# A refusal: the message after "WHERE: ", raised as an error that kb_outcome catches.
def kb_refuse($message): error({kbrules: $message});
def kb_fail($path; $what): kb_refuse((if $path == "" then "top level" else $path | ltrimstr(".") end) + ": " + $what);

# ------------------------------------------------------------------ the careful path
# engine/normalize.py, check by check and in its order, so that the first refusal is
# the same one. Paths are written as there: [0].format-specific.data.bitmaps[1].

# _At.get: .[$key] if of JSON type $want ("integer": a whole number); null when absent,
# or null and not required. (A parameter $x also defines a filter x: none may be
# named after a builtin, such as type.)
def kb_get($path; $key; $want; $required):
  if has($key) | not then (if $required then kb_fail($path; "missing '\($key)'") else null end)
  else .[$key] as $v
  | if $v == null and ($required | not) then null
    elif ($v | type) == (if $want == "integer" then "number" else $want end)
         and ($want != "integer" or ($v | . == floor)) then $v
    else kb_fail($path + "." + $key; "expected \({"object": "an object", "array": "an array", "string": "a string",
                 "boolean": "a boolean", "integer": "a number"}[$want]), got \($v | kb_kind)") end end;

def kb_flag($path; $key): kb_get($path; $key; "boolean"; false) == true;

# kb_get of several keys, in the order given: $specs is [[key, type, required], ...];
# an object of their values. (Data, not code: jq 1.6 compiles code slowly.)
def kb_fields($path; $specs):
  . as $o | reduce $specs[] as $s ({}; .[$s[0]] = ($o | kb_get($path; $s[0]; $s[1]; $s[2] == true)));

def kb_object($path): if type == "object" then . else kb_fail($path; "expected an object, got \(kb_kind)") end;

# An array of strings, or the refusal of the first element that is not one.
def kb_strings($path):
  . as $a
  | (first(range(0; length) | select(($a[.] | type) != "string")) // null) as $i
  | if $i == null then . else kb_fail($path + "[\($i)]"; "expected a string, got \($a[$i] | kb_kind)") end;

# What a JSON object that another command prints looks like, or null: the first of
# [[keys it always has], what] whose keys it has.
def kb_look_alike:
  if type != "object" then null
  else . as $o | first(@LOOK_ALIKES@[] | select(all(.[0][]; . as $k | $o | has($k))) | .[1]) // null end;

def kb_refuse_look_alike:
  (if type == "object" and ((.return | type) == "array" or (.return | type) == "object")
   then [".return", .return] else ["", .] end) as [$path, $v]
  | ($v | if type == "array" and length > 0 then .[0] else . end | kb_look_alike) as $what
  | if $what == null then . else kb_fail($path; "this looks like \($what), not what kbrules reads; @SHAPES@") end;

# Layer facts of an ImageInfo object (qemu-img info, or .image of a QMP node), and its
# qcow2 data (null for other formats): [facts, data].
def kb_image($path):
  kb_get($path; "format-specific"; "object"; false) as $specific
  | (if $specific != null and $specific.type == "qcow2"
     then ($specific | kb_get($path + ".format-specific"; "data"; "object"; false)) // {} else null end) as $data
  | kb_fields($path; [["full-backing-filename", "string"], ["backing-filename", "string"],
                       ["backing-filename-format", "string"], ["dirty-flag", "boolean"]]) as $f
  | (if $data == null then {} else $data | kb_fields($path + ".format-specific.data"; [["compat", "string"], ["corrupt", "boolean"]]) end) as $q
  | [ { backing: ($f["full-backing-filename"] // $f["backing-filename"]), backing_recorded: $f["backing-filename"],
        backing_format: $f["backing-filename-format"], dirty: ($f["dirty-flag"] == true), compat: $q.compat,
        corrupt: $q.corrupt }, $data ];

# A layer holds at most one bitmap of a name (the index counts the layer's bitmaps).
def kb_unique($path):
  . as $b
  | ([ range(0; length) as $i | [$b[$i][0], $i] ] | sort | . as $s
     | [ range(1; length) | select($s[.][0] == $s[. - 1][0]) | $s[.][1] ] | min) as $i
  | if $i == null then . else kb_fail($path + "[\($i)]"; "a second bitmap named \($b[$i][0] | kb_repr) in one layer") end;

def kb_qemu_img_bitmap($path; $layer):
  kb_object($path)
  | ((kb_get($path; "flags"; "array"; false) // []) | kb_strings($path + ".flags")) as $flags
  | kb_fields($path; [["name", "string", true], ["granularity", "integer"]]) as $f
  | [ $f.name, $layer, 4 + (if any($flags[]; . == "auto") then 1 else 0 end)
                       + (if any($flags[]; . == "in-use") then 2 else 0 end), $f.granularity ];

# qemu-img info: [[path, image], ...], top first.
def kb_qemu_img($top):
  if $top != null then kb_refuse("--top picks a node of QMP data; this is qemu-img info output") else . end
  | [ range(0; length) as $i | .[$i] as [$path, $image] | $image
      | kb_fields($path; [["filename", "string", true], ["format", "string", true], ["virtual-size", "integer", true]]) as $f
      | kb_image($path) as [$facts, $data]
      | ($path + ".format-specific.data") as $dp
      | (if $data == null then [] else
           [ ($data | kb_get($dp; "bitmaps"; "array"; false) // []) | range(0; length) as $j | .[$j]
             | kb_qemu_img_bitmap($dp + ".bitmaps[\($j)]"; $i) ] | kb_unique($dp + ".bitmaps") end) as $bitmaps
      | { layer: $i, filename: $f.filename, format: $f.format, node: null, held: null, bitmaps: $bitmaps } + $facts ]
  | { source: "qemu-img", layers: ., complete: (.[-1].backing == null) };

# One image with nested backing-image (as older tools print it): [[path, image], ...].
def kb_flatten:
  [ ["", .] | recurse(.[1] as $image | .[0] as $path
                      | if $image | has("backing-image")
                        then ($path + ".backing-image") as $next | [$next, ($image["backing-image"] | kb_object($next))]
                        else empty end) ];

# The bitmaps of a QMP format node ({path, node}) in layer $i; nameless ones are a
# backup job's own, which libvirt skips too.
def kb_qmp_bitmaps($i):
  .path as $path
  | [ (.node | kb_get($path; "dirty-bitmaps"; "array"; false) // []) | range(0; length) as $j
      | ($path + ".dirty-bitmaps[\($j)]") as $p | .[$j] | kb_object($p) | select(has("name"))
      | kb_get($p; "status"; "string"; false) as $status  # QEMU < 4.0: 'status', not 'recording'
      | (if has("recording") or $status == null then kb_flag($p; "recording") else $status != "disabled" end) as $recording
      | kb_fields($p; [["name", "string", true], ["inconsistent", "boolean"], ["persistent", "boolean"],
                       ["busy", "boolean"], ["granularity", "integer"]]) as $f
      | [ $f.name, $i, (if $recording then 1 else 0 end) + (if $f.inconsistent then 2 else 0 end)
                       + (if $f.persistent then 4 else 0 end)
                       + (if $f.busy or $status == "frozen" or $status == "locked" then 8 else 0 end), $f.granularity ] ]
  | kb_unique($path + ".dirty-bitmaps");

def kb_qmp_layer($i):
  { layer: $i, filename: .node.file, format: .node.drv, node: .node["node-name"], held: false,
    bitmaps: kb_qmp_bitmaps($i) } + .facts;

def kb_candidates: map("\(.node["node-name"] | kb_show) (\(.node.file | kb_show))") | join(", ");

# QMP query-named-block-nodes at $path: the chain of the format nodes $nodes (a libvirt
# disk's, top first), else rebuilt from backing file names from $top or the one top.
def kb_qmp($top; $nodes; $path):
  [ range(0; length) as $i | ($path + "[\($i)]") as $p | .[$i] | kb_object($p)
    | kb_fields($p; [["node-name", "string", true], ["drv", "string", true], ["file", "string", true]]) as $f
    | {path: $p, node: ., k: $i} ] as $all
  | [ $all[] | select(@FORMAT_DRIVERS@[.node.drv] == true) ] as $formats
  | ([ $all[] | select(@JOB_FILTERS@[.node.drv] == true) | {key: .node.file, value: true} ] | from_entries) as $protected
  | if $formats == [] then kb_fail($path; "no format node (drv qcow2, raw, ...) among the QMP block nodes") else . end
  | [ $formats[] | . + {facts: (.path as $p | .node | (kb_get($p; "image"; "object"; false) // {}) | kb_image($p + ".image") | .[0])} ]
  | if $nodes != null then
      (map({key: .node["node-name"], value: .}) | from_entries) as $byname
      | (first($nodes[] | select($byname[.] == null)) // null) as $missing
      | if $missing != null then
          kb_fail($path; "no format node named \($missing | kb_repr) in the QMP data, though the domain's disk has it")
        else . end
      | [ range(0; $nodes | length) as $i | $byname[$nodes[$i]] | kb_qmp_layer($i) ]
      | { source: "qmp", layers: ., complete: (.[-1].backing == null) }
    else
      . as $fmts
      # A backup job's scratch or target names the disk's top as its backing file.
      | [ .[] | select(.facts.backing as $b | $b == null or $protected[$b] != true) ]
      # One node per file (a base that two disks share has a node per disk), in
      # node-name order; a twin with other bitmaps leaves the chain ambiguous.
      | sort_by(.node["node-name"]) | to_entries | map(.value + {k: .key})
      | group_by(.node.file) as $groups
      | [ [ $groups[] | .[0] as $first | .[1:][] | {twin: ., first: $first} ] | sort_by(.twin.k)[]
          | (.twin | kb_qmp_layer(0) | del(.node)) as $twin
          | (.first | kb_qmp_layer(0) | del(.node)) as $first
          | select($twin != $first)
          | kb_fail(.twin.path; "two format nodes for file \(.twin.node.file | kb_repr) (\(.first.node["node-name"] | kb_repr)"
                    + " and \(.twin.node["node-name"] | kb_repr)) with different bitmaps: which belongs to this"
                    + " disk's chain only the domain knows (kbrules check --domain)") ] as $agreed
      | ($groups | map(.[0]) | sort_by(.k)) as $files
      | ($files | map({key: .node.file, value: .}) | from_entries) as $byfile
      | ($files | map(.facts.backing | select(. != null) | {key: ., value: true}) | from_entries) as $named
      | [ $files[] | select($named[.node.file] != true) ] as $tops
      | (if $top != null then
           first($fmts[] | select(.node["node-name"] == $top))
           // kb_refuse("no format node named \($top | kb_repr); candidates: \(if $tops != [] then $tops else $fmts end | kb_candidates)")
         elif ($tops | length) == 1 then $tops[0]
         elif $tops == [] then kb_fail($path; "the backing files form a loop: no top node")
         else kb_refuse("\($tops | length) disks in this QMP data; pick one with --top NODE: \($tops | kb_candidates)") end)
      | [ limit(($files | length) + 2; recurse(.facts.backing as $b | if $b == null then empty else $byfile[$b] // empty end)) ]
      | . as $walk
      # The first node whose file came before: a loop.
      | ([ range(0; length) | {key: $walk[.].node.file, value: .} ] | reverse | from_entries) as $first
      | ([ range(1; length) | select($first[$walk[.].node.file] < .) ] | min) as $loop
      | [ range(0; $loop // length) as $i | $walk[$i] | kb_qmp_layer($i) ]
      | if $loop != null then kb_fail($path; "backing loop at \($walk[$loop].node.file | kb_repr)") else . end
      | { source: "qmp", layers: ., complete: (.[-1].backing == null) }
    end;

# engine.normalize._detect: the chain of any input, or the refusal that `check` makes.
def kb_careful($top; $nodes):
  kb_refuse_look_alike
  | if type == "object" then
      if has("error") and (.error | type) == "object" then
        .error | kb_refuse("QMP error reply: \(if has("class") then .class | kb_pystr else "Error" end | kb_show): "
                           + "\(if has("desc") then .desc | kb_pystr else "(no description)" end | kb_show)")
      elif has("return") then
        .return
        | if type != "array" then
            kb_fail(".return"; "a QMP reply to another command (\(kb_kind), not an array of block nodes); @SHAPES@")
          elif length > 0 and all(.[]; type == "object" and (has("node-name") | not)) then
            kb_fail(".return"; "a QMP reply to another command (its entries have no 'node-name': they are not block nodes); @SHAPES@")
          else kb_qmp($top; $nodes; ".return") end
      elif has("filename") or has("format") then kb_flatten | kb_qemu_img($top)
      else kb_fail(""; "an object with neither 'filename' nor 'return'; @SHAPES@") end
    elif type == "array" then
      if length == 0 then kb_fail(""; "an empty array; @SHAPES@")
      else [ .[] | type == "object" and has("node-name") ] as $qmp
      | if all($qmp[]; .) then kb_qmp($top; $nodes; "")
        elif any($qmp[]; .) then
          kb_fail("[\(first(range(0; length) | select($qmp[.] | not)))]"; "not a QMP block node (no 'node-name') among QMP nodes")
        else [ range(0; length) as $i | ["[\($i)]", (.[$i] | kb_object("[\($i)]"))] ] | kb_qemu_img($top) end end
    else kb_fail(""; "\(kb_kind); @SHAPES@") end;

# ------------------------------------------------------------------ the fast path
# qemu-img info --output=json --backing-chain (an array): the same chain as the
# careful path, for input that passes every check; anything else is an error, and
# the careful path starts over. Names are checked once all copies are sorted
# (kb_copies), and so is a name twice in one layer.
def kb_fast($top):
  if $top != null or type != "array" or length == 0 or (.[0] | kb_look_alike) != null then error("careful") else . end
  | @QEMU_IMG_FLAGS@ as $flags
  | [ range(0; length) as $i | .[$i]
      | if type == "object" and (has("node-name") | not) and (.filename | type) == "string"
           and (.format | type) == "string" and (.["virtual-size"] | type == "number" and . == floor)
           and (.["full-backing-filename"] | . == null or type == "string")
           and (.["backing-filename"] | . == null or type == "string")
           and (.["backing-filename-format"] | . == null or type == "string")
           and (.["dirty-flag"] | . == null or type == "boolean")
        then . else error("careful") end
      | (.["format-specific"] | if . == null then null elif type != "object" then error("careful")
           elif .type != "qcow2" then null
           else .data | if . == null then {} elif type == "object" then . else error("careful") end end) as $q
      | { layer: $i, filename, format, node: null, held: null,
          backing: (.["full-backing-filename"] // .["backing-filename"]),
          backing_recorded: .["backing-filename"], backing_format: .["backing-filename-format"],
          dirty: (.["dirty-flag"] == true), compat: null, corrupt: null, bitmaps: [] }
      + (if $q == null then {} else $q
         | if (.compat | . == null or type == "string") and (.corrupt | . == null or type == "boolean") then
             { compat, corrupt,
               bitmaps: (.bitmaps | if . == null then [] elif type != "array" then error("careful")
                         else map([ .name, $i, ($flags[.flags | tojson] // error("careful")),
                                    (.granularity | if . == null or . == floor then . else error("careful") end) ]) end) }
           else error("careful") end end) ]
  | { source: "qemu-img", layers: ., complete: (.[-1].backing == null) };

# ------------------------------------------------------------------ the chain in its context

# $ctx: what kbrules knows besides the JSON (engine.model.Context): the libvirt
# domain and disk, the disk's QMP nodes, whether kbrules read the image with locks.
def kb_in_context($ctx):
  .domain = ($ctx.domain // null)
  | (.domain != null or $ctx.read_locked == true) as $known
  | .layers |= map(.held = (if .held == false or $known then false else null end))
  | .advice = (if .domain != null then "libvirt" elif .source == "qmp" then "qmp" else "image" end);

# Bitmap name -> the checkpoint that names it for the chain's disk.
def kb_checkpoint_bitmaps:
  (.domain // {checkpoints: [], disk: null}) as $d
  | [ $d.checkpoints[] | .name as $c | .disks[]
      | select(.name == $d.disk and .checkpoint == "bitmap" and .bitmap != null) | {key: .bitmap, value: $c} ]
  | from_entries;

# Where each name's copies are, grouped by name: one entry per name and run of layers,
# [name, first layer, last layer, position, above]. A run is consecutive layers whose
# bitmaps have the same names in the same order (libvirt gives a new overlay the
# bitmaps of the layer below), so that a name is at the same position in each layer of
# its run; `above` counts its copies in the runs above. Sorting the entries (one C
# sort, n log n in every jq) groups them by name, runs in layer order. Names that are
# not strings sort before or after the strings; a name twice in a layer sorts next to
# itself.
def kb_entries:
  .layers as $layers
  | [ $layers[] | [.bitmaps[][0]] ] as $names
  | [ range(0; $names | length) | select(. == 0 or $names[.] != $names[. - 1]) ] as $starts
  | [ range(0; $starts | length) as $r | $starts[$r] as $s | (($starts[$r + 1] // ($names | length)) - 1) as $e
      | $names[$s] | range(0; length) as $k | [.[$k], $s, $e, $k] ]
  | sort
  | if length > 0 and ((.[0][0] | type) != "string" or (.[-1][0] | type) != "string") then error("careful") else . end
  | [ foreach .[] as $x (null;
        if . != null and .[0] == $x[0] then
          (if .[1] == $x[1] then error("careful") else $x + [.[4] + .[2] - .[1] + 1] end)
        else $x + [0] end) ];

# The names being checked: the requested ones (first occurrence), else every name
# ($present, sorted), and every name that a checkpoint gives the disk, sorted.
def kb_names($req; $present):
  if ($req | length) > 0 then $req | to_entries | group_by(.value) | map(.[0]) | sort_by(.key) | map(.value)
  elif .domain == null then $present
  else $present + (kb_checkpoint_bitmaps | keys) | unique end;

# What the subjects are made from: the chain, where each name's copies are (entries,
# from kb_entries; groups: name -> [first, end] of its entries), the names checked.
def kb_index($req; $ctx):
  kb_in_context($ctx) as $chain
  | ($chain | kb_entries) as $entries
  | ($entries | length) as $n
  | [ range(0; $n) | select($entries[.][4] == 0) ] as $heads
  | { chain: $chain, entries: $entries, req: $req, named: ($chain | kb_checkpoint_bitmaps),
      groups: ([ range(0; $heads | length) as $m
                 | {key: $entries[$heads[$m]][0], value: [$heads[$m], ($heads[$m + 1] // $n)]} ] | from_entries),
      present: [ $heads[] | $entries[.][0] ],
      names: ($chain | kb_names($req; [ $heads[] | $entries[.][0] ])) };

# The copies of one name, top first, each [name, layer, flags, granularity, above].
def kb_copies_of($ix; $name):
  $ix.chain.layers as $layers
  | ($ix.groups[$name] // empty) as [$a, $b]
  | $ix.entries[$a:$b][] as [$n, $s, $e, $k, $above]
  | ($above - $s) as $base | $layers[$s:$e + 1][] | .bitmaps[$k] | . + [$base + .[1]];

# ------------------------------------------------------------------ subjects
# Each kind's contexts (engine/subjects.py says what they hold; its table, the facts).

# A copy's context: [name, layer, flags, granularity, above].
def kb_copy_contexts($ix): $ix.names[] as $name | kb_copies_of($ix; $name);

# A bitmap's context: its first layer, its number of copies and their granularities
# (all that its facts need of its copies).
def kb_bitmap_contexts($ix):
  $ix.chain as $chain | $ix.entries as $entries | (($chain.layers | length) - 1) as $last
  | $ix.names[] as $name | ($ix.groups[$name] // [0, 0]) as [$a, $b]
  | { name: $name, first: (if $a < $b then $entries[$a][1] else null end), count: ([$entries[$a:$b][] | .[2] - .[1] + 1] | add // 0),
      granularities: [ $entries[$a:$b][] as [$n, $s, $e, $k] | $chain.layers[$s:$e + 1][].bitmaps[$k][3] ],
      complete: $chain.complete, last: $last,
      checkpointed: (if $chain.domain == null then null else $ix.named | has($name) end),
      present: $ix.present };

def kb_layer_contexts($ix):
  $ix.chain.layers as $layers
  | [ foreach $layers[] as $l (0; . + ($l.bitmaps | length); . - ($l.bitmaps | length)) ] as $above
  | $layers[] | {layer: ., below: $layers[.layer + 1], above: $above[.layer], held};

def kb_checkpoint_contexts($ix):
  $ix.req as $req
  | ($ix.chain.domain // {checkpoints: []}) as $d
  | $d.checkpoints[]
  | {checkpoint: ., entry: ([.disks[] | select(.name == $d.disk)] | .[0]), disks: $d.disks}
  # With names asked for, only the checkpoints of those names.
  | select(. as $p | ($req | length) == 0 or ($req | index([$p.checkpoint.name])) != null
           or ($p.entry != null and ($req | index([$p.entry.bitmap])) != null));

# engine.subjects.alike: the names present, most like $name first (Dice's coefficient
# of their character pairs, then code point order).
def kb_bigrams: if length > 1 then [range(0; length - 1) as $i | .[$i:$i + 2]] | unique else [.] end;
def kb_alike($name; $present):
  if ($present | length) == 0 then "no bitmap at all" else
    ($name | kb_bigrams) as $mine
    | [ $present[] | . as $other | (kb_bigrams) as $theirs
        | ([ $theirs[] | select(. as $b | $mine | index([$b]) != null) ] | length) as $both
        | {name: $other, score: (2 * $both / (($mine | length) + ($theirs | length)))} ]
    | sort_by(-.score, .name) | map("'" + .name + "'") as $ranked
    | ($ranked[:@ALIKE@] | join(", "))
      + (if ($ranked | length) > @ALIKE@ then ", and " + (($ranked | length) - @ALIKE@ | tostring) + " more" else "" end)
  end;

@FACTS@

@FINDING_FIELDS@

# A shell word (engine.text.sh_quote). Not @sh: libjq 1.8 writes NUL as \0 there.
def kb_sh: if type == "string" then "'" + (split("'") | join(@SH_ESCAPED@)) + "'" else tostring end;

# A template (engine.rule.Template, as jqbackend.template_parts gives it) rendered
# with the finding's context (.).
def kb_render($parts):
  . as $c
  | reduce $parts[] as $p (""; . + (if ($p | type) == "string" then $p
                                   elif $p[1] == "sh" then $c[$p[0]] | kb_sh else $c[$p[0]] | tostring end));

# The context of a finding at layer $at: the layer's fields, then the facts (which win).
def kb_finding_context($chain; $at; $facts): ({layer: $chain.layers[$at], domain: $chain.domain} | kb_finding_fields) + $facts;

# Every subject's facts, by kind (for tests: the same as engine.subjects.build).
def kb_subjects($req; $ctx):
  kb_index($req; $ctx) as $ix
  | { bitmap: [kb_bitmap_contexts($ix) | kb_facts_bitmap], copy: [kb_copy_contexts($ix) | kb_facts_copy],
      layer: [kb_layer_contexts($ix) | kb_facts_layer], checkpoint: [kb_checkpoint_contexts($ix) | kb_facts_checkpoint] };
"""

MAIN = r"""
# ------------------------------------------------------------------ the report
@RULE_FINDINGS@

def kb_found: sort_by(.si, .ri, .layer) | map(del(.si, .ri, .name, .group, .commands, .argv));

def kb_verdicts($F; $names):
  ([ $F[] | select(.group == "bitmap") ] | group_by(.name) | map({key: .[0].name, value: kb_found}) | from_entries) as $by
  | [ $names[] | ($by[.] // []) as $found
      | {name: ., valid: all($found[]; .severity != "error"), findings: $found} ];

def kb_checkpoints($F; $points; $bitmaps):
  if ($points | length) == 0 then [] else
    ([ $bitmaps[] | {key: .name, value: .valid} ] | from_entries) as $valid
    | [ $points[] | .name as $n
        | ([ $F[] | select(.group == "checkpoint" and .name == $n) ] | kb_found) as $found
        | { name: .name, bitmap: .bitmap,
            usable: (.covers and all($found[]; .severity != "error") and ($valid[.bitmap // ""] == true)),
            findings: $found } ] end;

# ------------------------------------------------------------------ the repair plan
# engine/plan.py, step for step (it says why each step is as it is). No step for a
# layer another program holds: the jq engine never reads with --force-share. Objects
# are written with their keys in order, as gojq writes every object.

def kb_q: "'" + . + "'";
def kb_step($bitmap; $layer; $say; $command): {bitmap: $bitmap, layer: $layer, say: $say, command: $command};
def kb_virsh($d): ["virsh"] + (if ($d.connect // "") != "" then ["-c", $d.connect] else [] end);
def kb_offline($chain): $chain.source == "qemu-img" and ($chain.domain == null or ($chain.domain.running | not));

# A layer's own error (a finding with its commands and argv).
def kb_layer_steps($chain):
  if (.commands | length) == 0 then [kb_step(null; .layer; .rule + ": " + .message + ": see the finding's remediation."; null)]
  elif kb_offline($chain) | not then
    . as $f | [ .commands[] | kb_step(null; $f.layer; $f.rule + ": " + $f.message + ". With the VM shut down: " + .; null) ]
  else . as $f | [ .argv[] | kb_step(null; $f.layer; $f.rule + ": " + $f.message + "."; .) ] end;

def kb_remove($name):
  kb_step($name; .layer; "Remove bitmap " + ($name | kb_q) + " from layer " + (.layer | tostring) + " (" + .filename + ").";
          ["qemu-img", "bitmap", "--remove", "--", .filename, $name]);

# A new bitmap in the top, with the next full backup (offline images); $g: the
# granularity of its first copy that gives one.
def kb_start($chain; $name; $g):
  $chain.layers[0] as $top
  | if ($top.format == "qcow2" and $top.compat != "0.10") | not then
      [kb_step($name; 0; "The top image " + $top.filename + " cannot hold bitmaps (raw, or qcow2 version 2): "
                         + "take a new full backup, and start bitmaps in a qcow2 version 3 overlay."; null)]
    else
      [ kb_step($name; 0; "Start bitmap " + ($name | kb_q) + " anew in the top image (" + $top.filename + ").";
                  ["qemu-img", "bitmap", "--add"] + (if $g == null then [] else ["-g", ($g | tostring)] end)
                  + ["--", $top.filename, $name]),
          kb_step($name; null; "Then take a new full backup, before anything writes to the chain again: bitmap "
                               + ($name | kb_q) + " tracks every write from now on."; null) ] end;

def kb_libvirt_steps($chain; $name; $holders):
  $chain.domain as $d
  | any($d.checkpoints[].disks[]; .name == $d.disk and .checkpoint == "bitmap" and .bitmap == $name) as $checkpoint
  | (if $d.running then
       (if $checkpoint then
          [kb_step($name; null; "Delete checkpoint " + ($name | kb_q) + ": libvirt removes every copy of its bitmap.";
                   kb_virsh($d) + ["checkpoint-delete"] + (if ($holders | length) > 0 then [] else ["--metadata"] end)
                   + ["--", $d.name, $name])]
        else
          [ $holders[]
            | if .layer == 0 and .node != null then
                ({arguments: {name: $name, node: .node}, execute: "block-dirty-bitmap-remove"} | tojson) as $qmp
                | kb_step($name; 0; "Remove bitmap " + ($name | kb_q) + " from the top node (" + .node + ").";
                          kb_virsh($d) + ["qemu-monitor-command", "--", $d.name, $qmp])
              else
                kb_step($name; .layer; "With the domain shut off, remove bitmap " + ($name | kb_q) + " from layer "
                                       + (.layer | tostring) + " (QEMU refuses to change a read-only backing node): "
                                       + "qemu-img bitmap --remove -- " + (.filename | kb_sh) + " " + ($name | kb_sh); null)
              end ] end)
     else
       [ $holders[] | kb_remove($name) ]
       + (if $checkpoint then
            [kb_step($name; null; "Delete the record of checkpoint " + ($name | kb_q) + " (libvirt deletes only the "
                                  + "record of a shut-off domain's checkpoint).";
                     kb_virsh($d) + ["checkpoint-delete", "--metadata", "--", $d.name, $name])]
          else [] end)
     end)
  + [kb_step($name; null; "Then take a full backup with a new checkpoint: virsh "
                          + (if ($d.connect // "") != "" then "-c " + ($d.connect | kb_sh) + " " else "" end)
                          + "backup-begin " + ($d.name | kb_sh) + " BACKUP.xml CHECKPOINT.xml, where CHECKPOINT.xml is "
                          + "<domaincheckpoint><name>NAME</name></domaincheckpoint>"
                          + (if $d.running then "" else " (start the domain first)" end) + "."; null)];

# A running QEMU without libvirt: QMP commands, for the client that talks to it.
def kb_qmp_steps($chain; $name; $holders):
  [ $holders[]
    | if .layer == 0 then
        kb_step($name; 0; "Send QMP: " + ({arguments: {name: $name, node: .node}, execute: "block-dirty-bitmap-remove"} | tojson); null)
      else
        kb_step($name; .layer; "With the VM shut down (QEMU refuses to change a read-only backing node): "
                               + "qemu-img bitmap --remove -- " + (.filename | kb_sh) + " " + ($name | kb_sh); null)
      end ]
  + [kb_step($name; null; "Then take a new full backup, and start the bitmap anew in the same QMP transaction as "
                          + "the backup job: block-dirty-bitmap-add "
                          + ({name: $name, node: $chain.layers[0].node, persistent: true} | tojson) + "."; null)];

# The layers holding a name, top first, and the granularity of its first copy that
# gives one: from kb_index's groups, not a scan of every layer's bitmaps (one scan per
# broken bitmap made a wide chain quadratic).
def kb_holders($ix; $name):
  ($ix.groups[$name] // [0, 0]) as [$a, $b] | [ $ix.entries[$a:$b][] as [$n, $s, $e] | $ix.chain.layers[$s:$e + 1][] ];
def kb_granularity($ix; $name):
  ($ix.groups[$name] // [0, 0]) as [$a, $b]
  | [ $ix.entries[$a:$b][] as [$n, $s, $e, $k] | $ix.chain.layers[$s:$e + 1][].bitmaps[$k][3] | select(. != null) ] | .[0];

def kb_bitmap_steps($ix):
  $ix.chain as $chain
  | .name as $name
  | [ .findings[] | select(.severity == "error") | .rule ] as $failed
  | if any($failed[]; . == "bitmap-exists") then []
    elif any($failed[]; . == "chain-complete") then
      [kb_step($name; null; "Give kbrules the whole chain first (the input stops above the base: a copy of bitmap "
                            + ($name | kb_q) + " below cannot be seen), then plan again."; null)]
    else
      kb_holders($ix; $name) as $holders
      | ($name | utf8bytelength) as $bytes
      | if any($name | explode[]; . == 0) or $bytes == 0 or $bytes > 1023 then
          [ $holders[] | kb_step($name; .layer; "Bitmap " + ($name | kb_q) + " in layer " + (.layer | tostring) + " ("
                                               + .filename + ") has a name that qemu-img cannot take: remove it with a "
                                               + "tool that can, then take a new full backup."; null) ]
        elif $chain.advice == "libvirt" then kb_libvirt_steps($chain; $name; $holders)
        elif $chain.advice == "qmp" then kb_qmp_steps($chain; $name; $holders)
        else [ $holders[] | kb_remove($name) ] + kb_start($chain; $name; kb_granularity($ix; $name)) end
    end;

# Every step, in the order to take them: the layers' errors first, then each bitmap
# that is not valid, in report order.
def kb_plan($ix; $F; $bitmaps):
  ([ $F[] | select(.group == null and .severity == "error") ] | sort_by(.si, .ri, .layer)
   | map(kb_layer_steps($ix.chain)) | add // [])
  + ([ $bitmaps[] | select(.valid | not) | kb_bitmap_steps($ix) ] | add // []);

# The JSON report of a normalized chain (kb_fast or kb_careful).
def kb_report($req; $ctx):
  kb_index($req; $ctx) as $ix
  | $ix.chain as $chain
  | [ kb_rule_findings($ix) ] as $F
  | kb_verdicts($F; $ix.names) as $bitmaps
  | kb_checkpoints($F; [kb_checkpoint_contexts($ix) | kb_facts_checkpoint]; $bitmaps) as $points
  | ([ $F[] | select(.severity == "error") ] | length) as $errors
  | { ok: ($errors == 0), errors: $errors, warnings: ([ $F[] | select(.severity == "warning") ] | length),
      source: $chain.source,
      trust_backing: false,
      chain: [ $chain.layers[] | {layer, filename, format, node} ],
      rules: @RULE_IDS@,
      bitmaps: $bitmaps,
      findings: ([ $F[] | select(.group == null) ] | kb_found),
      domain: ($chain.domain | if . == null then null else {name, disk, running} end),
      checkpoints: $points,
      newest_usable_checkpoint: ([ $points[] | select(.usable) | .name ] | last),
      plan: kb_plan($ix; $F; $bitmaps) };

# The input's name in messages: $args.named.input, else the file jq reads, else <stdin>.
def kb_where($args): $args.named.input // input_filename // "<stdin>";

# {report: REPORT} or {error: MESSAGE}, MESSAGE as `kbrules check` words it (without
# "kbrules: "). $args is shaped like $ARGS: {positional: [NAME...], named: {top,
# context, input}}.
def kb_outcome($args):
  . as $in
  | ($args.positional // []) as $req
  | ($args.named.top // null) as $top
  | ($args.named.context // {}) as $ctx
  | try {report: (kb_fast($top) | kb_report($req; $ctx))}
    catch (try {report: ($in | kb_careful($top; $ctx.nodes) | kb_report($req; $ctx))}
           catch (if type == "object" and has("kbrules") then {error: (kb_where($args) + ": " + .kbrules)} else error end));

# ------------------------------------------------------------------ for users

# The report, as `kbrules check --format json` prints it; on input that `check`
# refuses, its one line on stderr ("kbrules: WHERE: WHAT") and exit status 2.
# $args: like $ARGS (kbrules_report($ARGS) passes the command line through).
def kbrules_report($args):
  kb_outcome($args) as $o
  | if $o.error != null then "kbrules: \($o.error | kb_show)\n" | halt_error(2) else $o.report end;
def kbrules_report: kbrules_report({});

# One line of `kbrules check --format jsonl`: the report with "input", or {input,
# error} for input that `check` refuses. Never stops: for many inputs in one run.
def kbrules_entry($args):
  kb_outcome($args) as $o
  | {input: kb_where($args)} + (if $o.error != null then {error: ($o.error | kb_show)} else $o.report end);
def kbrules_entry: kbrules_entry({});

# ------------------------------------------------------------------ the program's entry

# The next input that jq reads, [value] or {error: jq's message} for text that is
# not JSON, with the file it comes from; nothing when there is none.
def kb_next:
  (try [input] catch (if . == "break" or . == "No more inputs" then empty else {error: .} end)) as $next
  | [$next, input_filename // "<stdin>"];  # (not `$next + ...`: jq runs b of a + b first)

def kb_all_inputs: kb_next | ., (select(.[0] | type == "array") | kb_all_inputs);

# The last line of what jq said (gojq's messages span lines, with a caret).
def kb_jq_said: split("\n") | map(select(. != "")) | last | split("^  ") | last;

# What `jq -f check.jq` runs. Under jq -n (no input read yet: input_filename is null)
# it reads the input itself, as `kbrules check` reads one: each file must hold one
# JSON value, and an input that is empty or not JSON is refused too (the words in
# parentheses are then jq's own). Otherwise jq reads the input: each JSON value is
# checked in turn.
def kbrules_main($args):
  if input_filename != null or . != null then kbrules_report($args)
  else [kb_all_inputs] as $in
  | ($args.named.input // null) as $where
  | (first(range(0; $in | length) as $i | $in[$i]
           | if (.[0] | type) == "object" then [.[1], .[0].error]
             elif $i > 0 and .[1] == $in[$i - 1][1] then [.[1], "more than one JSON value"] else empty end)
     // (if $in == [] then [$where // "<stdin>"] else null end)) as $bad
  | if $bad == null then $in[] | .[1] as $file | .[0][0] | kbrules_report($args + {named: ({input: $file} + $args.named)})
    else ($where // $bad[0]) + ": " + (if $bad[1] == null then "empty input; @SHAPES@"
      elif $bad[1] | (contains("Unfinished") or contains("unexpected EOF")) then "truncated JSON (\($bad[1] | kb_jq_said))"
      else "not JSON (\($bad[1] | kb_jq_said))" end)
    | "kbrules: \(kb_show)\n" | halt_error(2) end end;

"""

# As a jq file: $ARGS holds --arg top NODE, --arg input NAME and --args NAME... .
ENTRY_CLI = "\nkbrules_main($ARGS)\n"
# Through the binding: the input and the arguments arrive together as [input, args],
# so the program compiles once (the binding binds variables at compile time).
ENTRY_BINDING = "\n.[1] as $args | .[0] | kb_outcome($args)\n"


def template_parts(template: Template) -> list[Any]:
    """A template as data for kb_render: literal strings, and [field, filter] for each
    placeholder (data compiles to one constant: jq 1.6 compiles code slowly)."""
    parts: list[Any] = []
    for literal, field, filt in template.parts:
        if literal:
            parts.append(literal)
        if field is not None:
            parts.append([field, filt])
    return parts


def rule_data(rules: Sequence[Rule]) -> list[dict[str, Any]]:
    """What kb_finding needs of each rule, by its index."""
    return [{"id": r.id, "severity": r.severity, "si": SEVERITIES.index(r.severity), "kind": r.subject,
             "group": subjects.KINDS[r.subject].group, "message": template_parts(r.message),
             "remediation": {a: template_parts(t) for a, t in r.remediation.items()},
             # A layer's error becomes the plan's steps: its commands, shown and as argv.
             **({"commands": {a: [template_parts(c) for c in t.commands] for a, t in r.remediation.items()},
                 "argv": {a: [[[lit if field is None else [field, None] for lit, field in word]
                               for word in c.word_parts()] for c in t.commands]
                          for a, t in r.remediation.items()}}
                if subjects.KINDS[r.subject].group is None else {})} for r in rules]


def _facts_jq(kind: str) -> Callable[[str], str]:
    """jq text giving a fact of this kind from its context, by name."""
    by_name = {f.name: f.jq for f in subjects.KINDS[kind].facts}
    return lambda name: f"({by_name[name]})"


def condition_jq(rule: Rule) -> str:
    """The rule's requirement in jq, on the subject's context (facts computed in place,
    only those the requirement reaches)."""
    return ops.compile_jq(rule.require, _facts_jq(rule.subject))


def finding_jq(rule: Rule, index: int) -> str:
    """jq text of the finding of rule `index` on a subject's context (`.`) that fails it."""
    return f"kb_finding($chain; {index}; {ops.compile_jq(rule.at, _facts_jq(rule.subject))})"


def _checks(rules: Sequence[tuple[int, Rule]], fast: Sequence[str] = ()) -> str:
    """jq text of every rule's findings on one subject (`.`). For copies (`fast` given:
    the test of the rules checked by flags), one test first whether it passes them all,
    the common case, and each rule on its own only when it does not; elsewhere each
    rule on its own (its condition written once: compiling costs more than running)."""
    each = [f"(if {condition_jq(r)} then empty else {finding_jq(r, i)} end)" for i, r in rules]
    if not fast:
        return ", ".join(each) or "empty"
    passes = " and ".join(["$fine[.[2]]", *(condition_jq(r) for _, r in rules)])
    return f"if {passes} then empty\n      else {', '.join([*fast, *each])} end"


def _copy_findings(rules: Sequence[tuple[int, Rule]]) -> list[str]:
    """The copy rules: by flag combination, by name, or on each copy."""
    flags = [(i, r) for i, r in rules if ops.fields(r.require) <= FLAG_FACTS]
    names = [(i, r) for i, r in rules if (i, r) not in flags and ops.fields(r.require) <= NAME_FACTS]
    each = [(i, r) for i, r in rules if (i, r) not in flags and (i, r) not in names]
    out = []
    if flags:
        # For each flags number: the flag rules that fail, and whether none does
        # (computed once per run).
        table = ", ".join(f"(if {condition_jq(r)} then empty else {i} end)" for i, r in flags)
        dispatch = " el".join(f"if . == {i} then ($c | {finding_jq(r, i)}) " for i, r in flags) + "else empty end"
        out.append(f"( [ range(0; 16) as $c | [null, null, $c, null, null] | [ {table} ] ] as $fail\n"
                   f"    | ($fail | map(. == [])) as $fine\n"
                   f"    | kb_copy_contexts($ix) | . as $c\n"
                   f"    | {_checks(each, [f'($fail[.[2]][] | {dispatch})'])} )")
    elif each:
        out.append(f"( kb_copy_contexts($ix)\n    | {_checks(each)} )")
    for i, r in names:
        out.append(f"( $ix.names[] as $name | [$name] | if {condition_jq(r)} then empty else\n"
                   f"    kb_copies_of($ix; $name) | {finding_jq(r, i)} end )")
    return out


def rule_findings(rules: Sequence[Rule]) -> str:
    """def kb_rule_findings($ix): every finding of every rule, each kind's subjects
    visited once; and the findings' own definitions."""
    by_kind: dict[str, list[tuple[int, Rule]]] = {}
    for i, r in enumerate(rules):
        by_kind.setdefault(r.subject, []).append((i, r))
    parts = []
    for kind, found in by_kind.items():
        if kind == "copy":
            parts += _copy_findings(found)
        else:
            parts.append(f"( kb_{kind}_contexts($ix)\n    | {_checks(found)} )")
    body = ",\n  ".join(parts) or "empty"
    kinds = " el".join(f"if $rule.kind == {json.dumps(k)} then kb_facts_{k} " for k in subjects.KINDS) + "else null end"
    return f"""# The finding of rule $i on a subject (.) that fails it, at layer $at; tagged with its
# severity's and the rule's index (for ordering) and the subject's name (for grouping).
def kb_finding($chain; $i; $at):
  $chain.rules[$i] as $rule
  | ({kinds}) as $facts
  | kb_finding_context($chain; $at; $facts) as $c
  | {{ rule: $rule.id, severity: $rule.severity, layer: $at, filename: $c.filename,
      message: ($c | kb_render($rule.message)), remediation: ($c | kb_render($rule.remediation[$chain.advice])),
      caveat: null, si: $rule.si, ri: $i, name: $facts.name, group: $rule.group,
      # For the plan: a layer's commands, as shown and as argv (kb_found drops them).
      commands: (if $rule.group == null then [ $rule.commands[$chain.advice][] as $t | $c | kb_render($t) ] else null end),
      argv: (if $rule.group == null then [ $rule.argv[$chain.advice][] | [ .[] as $w | $c | kb_render($w) ] ] else null end) }};

def kb_rule_findings($ix):
  # The rules' data as one JSON string: a string literal costs jq 1.6 nothing to compile.
  ($ix.chain + {{rules: ({json.dumps(json.dumps(rule_data(rules), separators=(",", ":")))} | fromjson)}}) as $chain
  | {body};"""


def _lookup(names: Any) -> str:
    return json.dumps({n: True for n in sorted(names)})


def module(rules: Sequence[Rule], header: str = "") -> str:
    """The program as a jq module: definitions only (`include "kbrules"`)."""
    facts = "\n".join(f"def kb_facts_{kind}: {subjects.jq_facts(kind)};" for kind in subjects.KINDS)
    text = PRELUDE + MAIN
    for key, value in (("@NOT_PRINTABLE@", json.dumps([list(r) for r in NOT_PRINTABLE])),
                       ("@HIDDEN@", json.dumps([list(r) for r in HIDDEN])),
                       ("@ALIKE@", str(subjects.ALIKE)),
                       ("@LOOK_ALIKES@", json.dumps([[list(k), w] for k, (w, _) in zip(LOOK_ALIKE_KEYS, LOOK_ALIKES)])),
                       ("@SHAPES@", json.dumps(SHAPES)[1:-1]),  # inside jq strings
                       ("@FORMAT_DRIVERS@", _lookup(FORMAT_DRIVERS)), ("@JOB_FILTERS@", _lookup(JOB_FILTERS)),
                       ("@QEMU_IMG_FLAGS@", json.dumps(QEMU_IMG_FLAGS, separators=(",", ":"))),
                       ("@FACTS@", facts), ("@FINDING_FIELDS@", subjects.jq_finding_fields()),
                       ("@SH_ESCAPED@", json.dumps(SH_ESCAPED)), ("@RULE_IDS@", json.dumps([r.id for r in rules])),
                       ("@RULE_FINDINGS@", rule_findings(rules))):
        text = text.replace(key, value)
    return header + text.rstrip("\n") + "\n"


def compile_program(rules: Sequence[Rule], header: str = "", entry: str = ENTRY_CLI) -> str:
    """The program for `jq -f`: the module and the line that runs it."""
    return module(rules, header) + entry


def binding(rules: Sequence[Rule]) -> Any:
    """The program compiled by the PyPI jq binding (libjq), ready for run()."""
    import jq  # imported here: only this path needs the binding

    return jq.compile(compile_program(rules, entry=ENTRY_BINDING))


def run(compiled: Any, value: Any, bitmaps: Optional[Sequence[str]] = None,
        top: Optional[str] = None, context: Optional[Context] = None, where: str = "<data>") -> Any:
    """The report, as `jq -f PROGRAM --arg input WHERE --arg top TOP --argjson context
    CONTEXT --args BITMAPS...` would print it; InputError with `check`'s message for
    input that it refuses (`where` names the input there)."""
    named: dict[str, Any] = {"input": where}
    if top is not None:
        named["top"] = top
    if context is not None:
        named["context"] = context.to_json()
    args = {"positional": list(bitmaps or []), "named": named}
    with _RUNNING:  # one compiled program is one jq state: not for two threads at once
        outcome = compiled.input_value([value, args]).first()
    if "error" in outcome:
        raise InputError(outcome["error"])
    return outcome["report"]


_RUNNING = threading.Lock()


# The committed files: what `kbrules jq` and `kbrules jq --module` print with the
# shipped rules (tests/test_jq.py keeps them fresh).
PROGRAM_FILE, MODULE_FILE = "check.jq", "kbrules.jq"


def header(rules: Sequence[Rule], as_module: bool) -> str:
    """The comment block that opens a generated .jq file."""
    name, command = (MODULE_FILE, "kbrules jq --module") if as_module else (PROGRAM_FILE, "kbrules jq")
    sources = sorted({r.source.rsplit("/", 1)[-1] for r in rules})
    lines = [
        f"# {name}: GENERATED by `{command}` from {', '.join(sources)}.",
        "# Do not edit: change the YAML and regenerate (a test fails when rules/*.jq are stale).",
        "#",
    ]
    if as_module:
        lines += [
            "# The checks of `kbrules check` as a jq module (definitions only), for jq 1.6 or later,",
            "# gojq and libjq:",
            "#   jq -L rules 'include \"kbrules\"; kbrules_report' chain.json",
            "#   jq -L rules 'include \"kbrules\"; kbrules_report | .ok' chain.json",
            "#   jq -n -c -L rules 'include \"kbrules\"; inputs | kbrules_entry' a.json b.json",
            "# kbrules_report: the report of `kbrules check --format json`; on input that `check`",
            "#   refuses, its one line on stderr and exit status 2.",
            "# kbrules_entry: a line of `kbrules check --format jsonl`: the report with \"input\", or",
            "#   {\"input\", \"error\"}; it never stops the run.",
            "# Both also take $args shaped like $ARGS: {positional: [NAME...], named: {top, input,",
            "#   context}}, e.g. kbrules_report($ARGS) with --args NAME... --arg top NODE.",
        ]
    else:
        lines += [
            "# jq -f check.jq X prints the JSON report of `kbrules check --format json X` and",
            "# refuses what it refuses: one line on stderr (kbrules: X: what is wrong), exit status 2.",
            "# Usage (jq 1.6 or later, gojq, or libjq):",
            "#   qemu-img info --output=json --backing-chain top.qcow2 | jq -f check.jq",
            "#   jq -f check.jq chain.json --args -- NAME...      only these bitmaps (--bitmap NAME)",
            "#   virsh qemu-monitor-command VM '{\"execute\":\"query-named-block-nodes\",\"arguments\":{\"flat\":true}}' \\",
            "#     | jq -f check.jq --arg top NODE                 QMP data of several disks (--top NODE)",
            "#   jq -n -f check.jq chain.json                     also refuses empty input and text that",
            "#                                                    is not JSON (jq reads it for the program)",
            "# The report's \"ok\" is true exactly when `kbrules check` would exit 0:",
            "#   ... | jq -f check.jq | jq -e .ok                 exits 1 otherwise (4 on no input)",
        ]
    lines += ["#", "# Rules:", *(f"#   {r.id} ({r.severity}): {r.title}" for r in rules), ""]
    return "\n".join(lines)


def program_file(rules: Sequence[Rule]) -> str:
    """What `kbrules jq` prints: the program, with its header."""
    return compile_program(rules, header=header(rules, as_module=False))


def module_file(rules: Sequence[Rule]) -> str:
    """What `kbrules jq --module` prints: the module, with its header."""
    return module(rules, header=header(rules, as_module=True))
