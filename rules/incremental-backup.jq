# incremental-backup.jq: GENERATED from rules/incremental-backup.yaml by `kbrules jq --rules rules/incremental-backup.yaml`.
# Do not edit: change the YAML and regenerate (a test fails when this file is stale).
#
# Checks a qcow2 backing chain the way `kbrules check --format json` does, and prints
# the same JSON report, with these rules:
#   bitmap-exists (error): Some layer holds the bitmap
#   bitmap-in-top (error): The top image holds the bitmap
#   bitmap-contiguous (error): The layers holding the bitmap are one unbroken run from the top
#   bitmap-consistent (error): No copy of the bitmap is inconsistent (in-use)
#   bitmap-recording (error): Every copy of the bitmap is recording
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
  (["bochs", "cloop", "dmg", "luks", "parallels", "qcow", "qcow2", "qed", "raw", "vdi", "vhdx", "vmdk", "vpc"] | map({(.): true}) | add) as $isfmt
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


# subjects.alike, in jq: the names present, most like $name first.
def kb_bigrams: if length > 1 then [range(0; length - 1) as $i | .[$i:$i + 2]] | unique else [.] end;
def kb_alike($name; $present):
  if ($present | length) == 0 then "no bitmap at all" else
    ($name | kb_bigrams) as $mine
    | [ $present[] | . as $other | (kb_bigrams) as $theirs
        | ([ $theirs[] | select(. as $b | $mine | index([$b]) != null) ] | length) as $both
        | {name: $other, score: (2 * $both / (($mine | length) + ($theirs | length)))} ]
    | sort_by(-.score, .name) | map("'" + .name + "'") as $ranked
    | ($ranked[:5] | join(", "))
      + (if ($ranked | length) > 5 then ", and " + (($ranked | length) - 5 | tostring) + " more" else "" end)
  end;

def kb_subjects($names; $req):
  . as $chain
  | kb_checkpoint_bitmaps as $named
  | kb_by_name($names) as $groups
  | [ foreach (.layers[] | .bitmaps | length) as $n (0; . + $n; . - $n) ] as $above
  | ([ $chain.layers[].bitmaps[].name ] | unique) as $present
  | { bitmap: [ $groups[]
                | { name, copies, complete: $chain.complete, last: (($chain.layers | length) - 1),
                    checkpointed: (if $chain.domain == null then null else .name as $n | $named | has($n) end),
                    present: $present }
                | { "name": (.name), "first_layer": (.copies[0].layer), "copies": (.copies | length), "chain_complete": (.complete), "last_layer": (.last), "granularities": ([.copies[].granularity | select(. != null)] | unique | length), "alike": (if (.copies | length) > 0 then "" else kb_alike(.name; .present) end), "has_checkpoint": (.checkpointed) } ],
      copy: [ $groups[].copies | to_entries[] | .value + {above: .key}
              | { "name": (.name), "layer": (.layer), "copies_above": (.above), "recording": (.recording), "inconsistent": (.inconsistent), "persistent": (.persistent), "busy": (.busy), "granularity": (.granularity) } ],
      layer: [ $chain.layers[] | {layer: ., below: $chain.layers[.layer + 1], above: $above[.layer], held}
               | { "layer": (.layer.layer), "format": (.layer.format), "compat": (.layer.compat), "corrupt": (.layer.corrupt), "dirty": (.layer.dirty), "backing": (.layer.backing), "backing_recorded": (.layer.backing_recorded), "below_format": (.below.format), "backing_format": (.layer.backing_format), "bitmaps": (.layer.bitmaps | length), "bitmaps_above": (.above), "bitmaps_in_use": ([.layer.bitmaps[] | select(.inconsistent)] | length), "held": (.held) } ],
      checkpoint: [ ($chain.domain // {checkpoints: []}) as $d
                    | $d.checkpoints[]
                    | {checkpoint: ., entry: ([.disks[] | select(.name == $d.disk)] | .[0]), disks: $d.disks}
                    # With names asked for, only the checkpoints of those names.
                    | select(. as $p | ($req | length) == 0 or ($req | index([$p.checkpoint.name])) != null
                             or ($p.entry != null and ($req | index([$p.entry.bitmap])) != null))
                    | { "name": (.checkpoint.name), "bitmap": (.entry | if . != null and .checkpoint == "bitmap" then .bitmap else null end), "covers": (.entry != null and .entry.checkpoint == "bitmap"), "covered_disks": ([.checkpoint.disks[] | select(.checkpoint == "bitmap")] | length), "gone_disks": (. as $c | [.checkpoint.disks[].name | select(. as $n | $c.disks | index([$n]) | not)] | join(", ")) } ] };

def kb_finding_fields: { "filename": (.layer.filename), "format": (.layer.format), "node": (.layer.node), "domain": (.domain.name), "disk": (.domain.disk) };


# One finding of a subject (.) at layer $at; facts win over the finding's fields.
def kb_context($chain; $at): ({layer: $chain.layers[$at], domain: $chain.domain} | kb_finding_fields) + .;

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
| [ ( $S["bitmap"][] | select(([(.["copies"] > 0), (.["has_checkpoint"] == true), (.["chain_complete"] | not)] | any) | kb_truthy | not)
    | (0) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-exists", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "no layer holds a bitmap '" + (.["name"] | tostring) + "'; the chain holds, most alike first: " + (.["alike"] | tostring)),
        remediation: ($c | "Check the name: a bitmap that is not there cannot serve a backup, and nothing needs repairing."), caveat: null,
        si: 0, ri: 0, name: .name, group: "bitmap" } ),
    ( $S["bitmap"][] | select((.["first_layer"] == 0) | kb_truthy | not)
    | (0) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-in-top", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' is not in the top image " + (.["filename"] | tostring)),
        remediation: (if $chain.advice == "image" then ($c | "This bitmap cannot serve an incremental backup. Take a new full backup and start a new bitmap in the top image with it, with the image offline: qemu-img bitmap --add -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ".")
           elif $chain.advice == "qmp" then ($c | "This bitmap cannot serve an incremental backup. Take a new full backup and start a new persistent bitmap in the top node with it: QMP block-dirty-bitmap-add on node " + (.["node"] | tostring) + ", \"persistent\": true, in the same transaction as the backup job.")
           elif $chain.advice == "libvirt" then ($c | "This checkpoint cannot serve an incremental backup of disk " + (.["disk"] | tostring) + ". Take a new full backup with a new checkpoint: virsh backup-begin -- " + (.["domain"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " BACKUP.xml CHECKPOINT.xml. Then delete the old checkpoint (add --metadata when no layer holds its bitmap any more): virsh checkpoint-delete -- " + (.["domain"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ".")
          else null end), caveat: null,
        si: 0, ri: 1, name: .name, group: "bitmap" } ),
    ( $S["copy"][] | select((.["copies_above"] == .["layer"]) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-contiguous", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' in layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ") is cut off from the top: a layer above lacks it"),
        remediation: (if $chain.advice == "image" then ($c | "Writes made while the layer without the bitmap was the top were not tracked, so no incremental backup can be based on this bitmap. Remove the stray copy, with the image offline: qemu-img bitmap --remove -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". Then take a new full backup.")
           elif $chain.advice == "qmp" then ($c | "Writes made while the layer without the bitmap was the top were not tracked, so no incremental backup can be based on this bitmap. QEMU refuses to change a bitmap in a read-only backing node: with the VM shut down, remove the stray copy: qemu-img bitmap --remove -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". Then take a new full backup.")
           elif $chain.advice == "libvirt" then ($c | "Writes made while the layer without the bitmap was the top were not tracked, so no incremental backup can be based on this bitmap. Delete its checkpoint, which removes every copy: virsh checkpoint-delete -- " + (.["domain"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". If the domain has no such checkpoint, remove the stray copy with the domain shut off: qemu-img bitmap --remove -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". Then take a new full backup with a new checkpoint.")
          else null end), caveat: null,
        si: 0, ri: 2, name: .name, group: "bitmap" } ),
    ( $S["copy"][] | select((.["inconsistent"] | not) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-consistent", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' is inconsistent (in-use) in layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ")"),
        remediation: (if $chain.advice == "image" then ($c | "It cannot be trusted or repaired (qemu-img check -r all leaves it alone). If a VM still runs on this image, the flag says nothing offline: ask the VM instead (kbrules check --domain DOMAIN, or QMP). Otherwise remove it, with the image offline: qemu-img bitmap --remove -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". Then take a new full backup.")
           elif $chain.advice == "qmp" then ($c | "The running QEMU loaded it as not saved cleanly (its last writer died): it cannot be trusted or repaired. Remove it: QMP block-dirty-bitmap-remove on node " + (.["node"] | tostring) + ". A read-only backing node refuses that: there, with the VM shut down, qemu-img bitmap --remove -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". Then take a new full backup.")
           elif $chain.advice == "libvirt" then ($c | "The bitmap was not saved cleanly (the VM crashed or was killed): it cannot be trusted or repaired. Delete the checkpoint, which removes every copy: virsh checkpoint-delete -- " + (.["domain"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". Then take a new full backup with a new checkpoint.")
          else null end), caveat: null,
        si: 0, ri: 3, name: .name, group: "bitmap" } ),
    ( $S["copy"][] | select(([.["recording"], .["inconsistent"]] | any) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-recording", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' is disabled (not recording) in layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ")"),
        remediation: (if $chain.advice == "image" then ($c | "Writes made while it was disabled were not tracked, and enabling it now does not bring them back. Remove the bitmap from every layer that holds it, with the images offline; from this one: qemu-img bitmap --remove -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". Then take a new full backup.")
           elif $chain.advice == "qmp" then ($c | "Writes made while it was disabled were not tracked, and enabling it now does not bring them back. Remove the bitmap: QMP block-dirty-bitmap-remove on node " + (.["node"] | tostring) + ". A read-only backing node refuses that: there, with the VM shut down, qemu-img bitmap --remove -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". Then take a new full backup.")
           elif $chain.advice == "libvirt" then ($c | "Writes made while it was disabled were not tracked, and enabling it now does not bring them back. Delete the checkpoint, which removes every copy: virsh checkpoint-delete -- " + (.["domain"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". Then take a new full backup with a new checkpoint.")
          else null end), caveat: null,
        si: 0, ri: 4, name: .name, group: "bitmap" } ),
    ( $S["copy"][] | select(.["persistent"] | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-persistent", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' is transient (not persistent) in layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ")"),
        remediation: (if $chain.advice == "image" then ($c | "A transient bitmap is lost at shutdown and libvirt refuses it. Remove it (QMP block-dirty-bitmap-remove on node " + (.["node"] | tostring) + "), add it again with \"persistent\": true, and take a new full backup.")
           elif $chain.advice == "qmp" then ($c | "A transient bitmap is lost at shutdown and libvirt refuses it. Remove it (QMP block-dirty-bitmap-remove on node " + (.["node"] | tostring) + "), add it again with \"persistent\": true, and take a new full backup.")
           elif $chain.advice == "libvirt" then ($c | "A transient bitmap is lost at shutdown and libvirt refuses it. Delete the checkpoint: virsh checkpoint-delete -- " + (.["domain"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " " + (.["name"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". Then take a new full backup with a new checkpoint.")
          else null end), caveat: null,
        si: 0, ri: 5, name: .name, group: "bitmap" } ),
    ( $S["bitmap"][] | select(.["chain_complete"] | kb_truthy | not)
    | (.["last_layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "chain-complete", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "layer " + (.["last_layer"] | tostring) + " (" + (.["filename"] | tostring) + ") has a backing file that is not in the input, so bitmap '" + (.["name"] | tostring) + "' cannot be checked below it"),
        remediation: ($c | "Give the whole chain: qemu-img info --output=json --backing-chain, or the image path itself (kbrules check IMAGE), or all of the VM's block nodes from QMP query-named-block-nodes with \"flat\": true."), caveat: null,
        si: 0, ri: 6, name: .name, group: "bitmap" } ) ] as $F
| kb_verdicts($F; $names) as $bitmaps
| kb_checkpoints($F; $S.checkpoint; $bitmaps) as $points
| { source: $chain.source,
    trust_backing: false,
    chain: [ $chain.layers[] | {layer, filename, format, node} ],
    rules: ["bitmap-exists", "bitmap-in-top", "bitmap-contiguous", "bitmap-consistent", "bitmap-recording", "bitmap-persistent", "chain-complete"],
    bitmaps: $bitmaps,
    findings: [ $F[] | select(.group == null) ] | sort_by(.si, .ri, .layer) | map(del(.si, .ri, .name, .group)),
    domain: ($chain.domain | if . == null then null else {name, disk, running} end),
    checkpoints: $points,
    newest_usable_checkpoint: ([ $points[] | select(.usable) | .name ] | last) };

kb_report($ARGS)
