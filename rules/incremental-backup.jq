# incremental-backup.jq: GENERATED from rules/incremental-backup.yaml by `kbrules jq --rules rules/incremental-backup.yaml`.
# Do not edit: change the YAML and regenerate (a test fails when this file is stale).
#
# Checks a qcow2 backing chain the way `kbrules check --format json` does, and prints
# the same JSON report, with these rules:
#   bitmap-in-top (error): The top image holds the bitmap
#   bitmap-contiguous (error): The layers holding the bitmap are one unbroken run from the top
#   bitmap-recording (error): Every copy of the bitmap is recording
#   bitmap-consistent (error): No copy of the bitmap is inconsistent (in-use)
#   bitmap-persistent (error): Every copy of the bitmap is persistent
#   chain-complete (error): The input holds the whole backing chain
#
# Usage (jq 1.6 or later, gojq, or libjq):
#   qemu-img info --output=json --backing-chain top.qcow2 | jq -f incremental-backup.jq
#   jq -f incremental-backup.jq chain.json --args -- NAME...      only these bitmaps
#   virsh qemu-monitor-command VM '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' \
#     | jq -f incremental-backup.jq --arg top NODE                 QMP data of several disks
# A bitmap is fit for an incremental backup when its entry says "valid": true;
#   ... | jq -f incremental-backup.jq | jq -e 'all(.bitmaps[]; .valid)'   exits 1 otherwise.

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
      | { layer: $i, filename: .filename, format: .format, node: null,
          bitmaps: [ ($q // {}) | (.bitmaps // [])[] | (.flags // []) as $f
                     | { name: .name, layer: $i, recording: any($f[]; . == "auto"),
                         inconsistent: any($f[]; . == "in-use"), persistent: true,
                         busy: false, granularity: .granularity } ] } + kb_image ]
  | { source: "qemu-img", layers: ., complete: (.[-1].backing == null) };

# QMP query-named-block-nodes: rebuild the chain from backing file names.
def kb_qmp($top):
  (["bochs", "cloop", "dmg", "luks", "parallels", "qcow", "qcow2", "qed", "raw", "vdi", "vhdx", "vmdk", "vpc"] | map({(.): true}) | add) as $isfmt
  | [ .[] | select($isfmt[.drv] == true) | . + { kb: ((.image // {}) | kb_image) } ] as $fmts
  | if ($fmts | length) == 0 then kb_fail("no format node among the QMP block nodes") else . end
  | (reduce $fmts[] as $n ({}; .[$n.file] = $n)) as $byfile
  | (reduce ($fmts[].kb.backing | select(. != null)) as $b ({}; .[$b] = true)) as $named
  | [ $fmts[] | select($named[.file] | not) ] as $tops
  | (if $top != null then
       ([ $fmts[] | select(.["node-name"] == $top) ] | if length > 0 then .[0]
        else kb_fail("no format node named " + ($top | tojson)) end)
     elif ($tops | length) == 1 then $tops[0]
     elif ($tops | length) == 0 then kb_fail("the backing files form a loop: no top node")
     else kb_fail(($tops | length | tostring) + " disks in this QMP data; pick one with --top NODE: "
                  + ([ $tops[] | .["node-name"] + " (" + .file + ")" ] | join(", "))) end) as $start
  | [ limit(($fmts | length) + 1; $start | recurse(if .kb.backing != null then ($byfile[.kb.backing] // empty) else empty end)) ]
  | if length > ($fmts | length) then kb_fail("backing loop") else . end
  | { source: "qmp",
      layers: [ to_entries[] | .key as $i | .value
        | { layer: $i, filename: .file, format: .drv, node: .["node-name"],
            bitmaps: [ (.["dirty-bitmaps"] // [])[]
              | { name: .name, layer: $i,
                  recording: (if has("recording") or .status == null then .recording == true
                              else .status != "disabled" end),
                  inconsistent: (.inconsistent == true), persistent: (.persistent == true),
                  busy: (.busy == true or .status == "frozen" or .status == "locked"),
                  granularity: .granularity } ] } + .kb ],
      complete: (.[-1].kb.backing == null) };

def kb_chain($top):
  if type == "object" and (.error | type) == "object" then
    kb_fail("QMP error reply: " + (.error.class // "Error") + ": " + (.error.desc // "(no description)"))
  elif type == "object" and has("return") then .return | kb_qmp($top)
  elif type == "array" and length > 0 and all(.[]; type == "object" and has("node-name")) then kb_qmp($top)
  elif $top != null then kb_fail("--top picks a node of QMP data; this is qemu-img info output")
  elif type == "object" or (type == "array" and length > 0) then kb_qemu_img
  else kb_fail("not qemu-img info or QMP query-named-block-nodes JSON") end;

# Linear in every jq: no lookup objects or arrays grown inside `reduce` (jq 1.6 and gojq
# copy a nested array or object on each update, which is quadratic); grouping is done
# by sorting instead (group_by is stable, so copies stay in layer order).

# The names being checked: the requested ones (first occurrence), else every name, sorted.
def kb_names($req):
  if ($req | length) > 0 then
    $req | to_entries | group_by(.value) | map(.[0]) | sort_by(.key) | map(.value)
  else [ .layers[].bitmaps[].name ] | unique end;

# [{name, order, copies: [bitmap + {layer}, ...]}] for each checked name, in order.
def kb_by_name($names):
  [ ($names | to_entries[] | {name: .value, order: .key}),
    .layers[].bitmaps[] ]  # each bitmap knows its layer (see kb_qemu_img, kb_qmp)
  | group_by(.name)
  | map(select(.[0] | has("order")) | {name: .[0].name, order: .[0].order, copies: .[1:]})
  | sort_by(.order);


def kb_subjects($names):
  . as $chain
  | kb_by_name($names) as $groups
  | [ foreach (.layers[] | .bitmaps | length) as $n (0; . + $n; . - $n) ] as $above
  | { bitmap: [ $groups[]
                | { name, copies, complete: $chain.complete, last: (($chain.layers | length) - 1) }
                | { "name": (.name), "first_layer": (.copies[0].layer), "copies": (.copies | length), "chain_complete": (.complete), "last_layer": (.last), "granularities": ([.copies[].granularity | select(. != null)] | unique | length) } ],
      copy: [ $groups[].copies | to_entries[] | .value + {above: .key}
              | { "name": (.name), "layer": (.layer), "copies_above": (.above), "recording": (.recording), "inconsistent": (.inconsistent), "persistent": (.persistent), "busy": (.busy), "granularity": (.granularity) } ],
      layer: [ $chain.layers[] | {layer: ., below: $chain.layers[.layer + 1], above: $above[.layer]}
               | { "layer": (.layer.layer), "format": (.layer.format), "compat": (.layer.compat), "corrupt": (.layer.corrupt), "dirty": (.layer.dirty), "backing": (.layer.backing), "backing_recorded": (.layer.backing_recorded), "below_format": (.below.format), "backing_format": (.layer.backing_format), "bitmaps": (.layer.bitmaps | length), "bitmaps_above": (.above) } ] };

def kb_layer_fields: { "filename": (.filename), "format": (.format), "node": (.node) };


# One finding of a subject (.) at layer $at; facts win over the layer's fields.
def kb_context($chain; $at): ($chain.layers[$at] | kb_layer_fields) + .;

def kb_report($args):
  (($args.named.top) // null) as $top
| kb_chain($top) as $chain
| ($chain | kb_names($args.positional // [])) as $names
| ($chain | kb_subjects($names)) as $S
| [ ( $S["bitmap"][] | select((.["first_layer"] == 0) | kb_truthy | not)
    | (0) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-in-top", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' is not in the top image " + (.["filename"] | tostring)),
        remediation: ($c | "This bitmap cannot serve an incremental backup. Take a new full backup and start a new bitmap in the top image with it (libvirt: a new checkpoint; offline: qemu-img bitmap --add -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ")."), caveat: null,
        si: 0, ri: 0, name: .name } ),
    ( $S["copy"][] | select((.["copies_above"] == .["layer"]) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-contiguous", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' in layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ") is cut off from the top: a layer above lacks it"),
        remediation: ($c | "Writes made while the layer without the bitmap was the top were not tracked, so no incremental backup can be based on this bitmap. Remove the stray copy (qemu-img bitmap --remove -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ", image offline) and take a new full backup."), caveat: null,
        si: 0, ri: 1, name: .name } ),
    ( $S["copy"][] | select(.["recording"] | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-recording", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' is disabled (not recording) in layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ")"),
        remediation: ($c | "Writes made while it was disabled were not tracked, and enabling it now does not bring them back. Remove the bitmap (qemu-img bitmap --remove -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ", and its copies in the other layers) and take a new full backup."), caveat: null,
        si: 0, ri: 2, name: .name } ),
    ( $S["copy"][] | select((.["inconsistent"] | not) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-consistent", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' is inconsistent (in-use) in layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ")"),
        remediation: ($c | "It cannot be trusted or repaired (qemu-img check -r all leaves it alone). With the image offline, remove it (qemu-img bitmap --remove -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ") and take a new full backup. If a VM still runs on this image, the flag says nothing offline: ask QEMU over QMP instead."), caveat: null,
        si: 0, ri: 3, name: .name } ),
    ( $S["copy"][] | select(.["persistent"] | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-persistent", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' is transient (not persistent) in layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ")"),
        remediation: ($c | "A transient bitmap is lost at shutdown and libvirt refuses it. Remove it (QMP block-dirty-bitmap-remove on node " + (.["node"] | tostring) + "), add it again with \"persistent\": true, and take a new full backup."), caveat: null,
        si: 0, ri: 4, name: .name } ),
    ( $S["bitmap"][] | select(.["chain_complete"] | kb_truthy | not)
    | (.["last_layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "chain-complete", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "layer " + (.["last_layer"] | tostring) + " (" + (.["filename"] | tostring) + ") has a backing file that is not in the input, so bitmap '" + (.["name"] | tostring) + "' cannot be checked below it"),
        remediation: ($c | "Give the whole chain: qemu-img info --output=json --backing-chain, or the image path itself (kbrules check IMAGE), or all of the VM's block nodes from QMP query-named-block-nodes with \"flat\": true."), caveat: null,
        si: 0, ri: 5, name: .name } ) ] as $F
| { source: $chain.source,
    trust_backing: false,
    chain: [ $chain.layers[] | {layer, filename, format, node} ],
    rules: ["bitmap-in-top", "bitmap-contiguous", "bitmap-recording", "bitmap-consistent", "bitmap-persistent", "chain-complete"],
    bitmaps: [ [ ($names | to_entries[] | {name: .value, order: .key}), ($F[] | select(.name != null)) ]
               | group_by(.name)[]
               | (.[0].order) as $order
               | ([ .[1:][] ] | sort_by(.si, .ri, .layer) | map(del(.si, .ri, .name))) as $found
               | { order: $order, name: .[0].name, valid: all($found[]; .severity != "error"), findings: $found } ]
             | sort_by(.order) | map(del(.order)),
    findings: [ $F[] | select(.name == null) ] | sort_by(.si, .ri, .layer) | map(del(.si, .ri, .name)) };

kb_report($ARGS)
