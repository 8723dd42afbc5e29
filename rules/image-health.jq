# image-health.jq: GENERATED from rules/image-health.yaml by `kbrules jq --rules rules/image-health.yaml`.
# Do not edit: change the YAML and regenerate (a test fails when this file is stale).
#
# Checks a qcow2 backing chain the way `kbrules check --format json` does, and prints
# the same JSON report, with these rules:
#   image-corrupt (error): No qcow2 layer is flagged corrupt
#   image-dirty (warning): No layer was left dirty
#   backing-format-probed (error): Every backing file has a recorded format
#   bitmap-granularity-mismatch (warning): All copies of a bitmap have one granularity
#   bitmap-busy (warning): No copy of the bitmap is busy
#   bitmap-name-invalid (error): Bitmap names are 1 to 1023 bytes long
#   layer-cannot-hold-bitmaps (info): Where bitmaps cannot go
#   top-bitmaps-in-use (warning): Not every bitmap of the top image is in use
#
# Usage (jq 1.6 or later, gojq, or libjq):
#   qemu-img info --output=json --backing-chain top.qcow2 | jq -f image-health.jq
#   jq -f image-health.jq chain.json --args -- NAME...      only these bitmaps
#   virsh qemu-monitor-command VM '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' \
#     | jq -f image-health.jq --arg top NODE                 QMP data of several disks
# A bitmap is fit for an incremental backup when its entry says "valid": true;
#   ... | jq -f image-health.jq | jq -e 'all(.bitmaps[]; .valid)'   exits 1 otherwise.

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
| [ ( $S["layer"][] | select((.["corrupt"] | not) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "image-corrupt", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ") is flagged corrupt: QEMU will only open it read-only"),
        remediation: ($c | "Copy the file first. Then, with no program using it, repair it: qemu-img check -r all -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + ". If the check cannot repair it, restore the layer from a backup."), caveat: null,
        si: 0, ri: 0, name: .name, group: null } ),
    ( $S["layer"][] | select((.["dirty"] | not) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "image-dirty", severity: "warning", layer: $at,
        filename: $c.filename, message: ($c | "layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ") is dirty: it was not closed cleanly while lazy refcounts were on"),
        remediation: ($c | "With no program using the image, rebuild the refcounts (opening it read-write in QEMU does the same): qemu-img check -r all -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + "."), caveat: null,
        si: 1, ri: 1, name: .name, group: null } ),
    ( $S["layer"][] | select(([(.["backing"] == null), (.["backing_format"] != null)] | any) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "backing-format-probed", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ") names its backing file " + (.["backing"] | tostring) + " without a format: QEMU would probe it, and libvirt refuses the chain"),
        remediation: ($c | "Record the format without touching any data (the format shown is what qemu-img probed; make sure it is the real one): qemu-img rebase -u -F " + (.["below_format"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " -b " + (.["backing_recorded"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + " -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + "."), caveat: null,
        si: 0, ri: 2, name: .name, group: null } ),
    ( $S["bitmap"][] | select((.["granularities"] <= 1) | kb_truthy | not)
    | (0) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-granularity-mismatch", severity: "warning", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' has " + (.["granularities"] | tostring) + " different granularities across the layers"),
        remediation: ($c | "Nothing is lost. To align them, start the bitmap anew with one granularity at the next full backup (qemu-img bitmap --add -g BYTES, or the granularity of a libvirt checkpoint)."), caveat: null,
        si: 1, ri: 3, name: .name, group: "bitmap" } ),
    ( $S["copy"][] | select((.["busy"] | not) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-busy", severity: "warning", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' in layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ") is busy: a block job is using it"),
        remediation: ($c | "Let the job finish or cancel it (virsh domjobinfo DOMAIN, QMP query-block-jobs), then check again."), caveat: null,
        si: 1, ri: 4, name: .name, group: "bitmap" } ),
    ( $S["copy"][] | select(([((.["name"] | if type == "string" then utf8bytelength else null end) > 0), ((.["name"] | if type == "string" then utf8bytelength else null end) <= 1023)] | all) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "bitmap-name-invalid", severity: "error", layer: $at,
        filename: $c.filename, message: ($c | "bitmap '" + (.["name"] | tostring) + "' in layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ") has a name that is empty or longer than 1023 bytes"),
        remediation: ($c | "QEMU cannot have made it: check where the data came from. A bitmap with such a name cannot be used; create a new one with a valid name at the next full backup."), caveat: null,
        si: 0, ri: 5, name: .name, group: "bitmap" } ),
    ( $S["layer"][] | select(([(.["bitmaps_above"] == 0), ([(.["format"] == "qcow2"), (.["compat"] != "0.10")] | all)] | any) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "layer-cannot-hold-bitmaps", severity: "info", layer: $at,
        filename: $c.filename, message: ($c | "layer " + (.["layer"] | tostring) + " (" + (.["filename"] | tostring) + ") cannot store persistent bitmaps (only qcow2 with compat 1.1 can): the bitmaps of the layers above end above it"),
        remediation: ($c | "Nothing to fix. To let bitmaps reach this layer: a raw layer cannot be amended, only copied to qcow2 (qemu-img convert -f raw -O qcow2) with the layer above rebased onto the copy; a qcow2 v2 layer is upgraded in place: qemu-img amend -o compat=1.1 -- " + (.["filename"] | if type == "string" then "'" + (split("'") | join("'\\''")) + "'" else tostring end) + "."), caveat: null,
        si: 2, ri: 6, name: .name, group: null } ),
    ( $S["layer"][] | select(([(.["layer"] != 0), (.["bitmaps"] == 0), (.["bitmaps_in_use"] < .["bitmaps"]), (.["held"] == false)] | any) | kb_truthy | not)
    | (.["layer"]) as $at | kb_context($chain; $at) as $c
    | { rule: "top-bitmaps-in-use", severity: "warning", layer: $at,
        filename: $c.filename, message: ($c | "every bitmap of the top image " + (.["filename"] | tostring) + " is in use: a VM may have it open right now (this data is then stale), or its last writer crashed"),
        remediation: ($c | "Ask the running VM for the live answer before removing anything (kbrules check --domain DOMAIN, or QMP query-named-block-nodes piped to kbrules check -). If no VM uses the image, its writer crashed: the bitmaps are broken (see bitmap-consistent)."), caveat: null,
        si: 1, ri: 7, name: .name, group: null } ) ] as $F
| kb_verdicts($F; $names) as $bitmaps
| kb_checkpoints($F; $S.checkpoint; $bitmaps) as $points
| { source: $chain.source,
    trust_backing: false,
    chain: [ $chain.layers[] | {layer, filename, format, node} ],
    rules: ["image-corrupt", "image-dirty", "backing-format-probed", "bitmap-granularity-mismatch", "bitmap-busy", "bitmap-name-invalid", "layer-cannot-hold-bitmaps", "top-bitmaps-in-use"],
    bitmaps: $bitmaps,
    findings: [ $F[] | select(.group == null) ] | sort_by(.si, .ri, .layer) | map(del(.si, .ri, .name, .group)),
    domain: ($chain.domain | if . == null then null else {name, disk, running} end),
    checkpoints: $points,
    newest_usable_checkpoint: ([ $points[] | select(.usable) | .name ] | last) };

kb_report($ARGS)
