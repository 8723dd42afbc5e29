"""What rules are checked on: the subjects and their facts, built from a Chain in one
pass over its bitmaps (the cost stays linear in the size of the input)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .model import Chain

# Subject kind -> fact -> meaning. Rules may read only these; the docs list them.
FACTS: dict[str, dict[str, str]] = {
    "bitmap": {
        "name": "the bitmap's name",
        "first_layer": "the topmost layer holding it; null when no layer does",
        "copies": "how many layers hold it",
        "chain_complete": "false when the last layer has a backing file missing from the input",
        "last_layer": "the index of the last layer in the input",
        "granularities": "how many different granularities its copies have",
    },
    "copy": {
        "name": "the bitmap's name",
        "layer": "the layer holding this copy (0 is the top)",
        "copies_above": "how many layers above this one hold the bitmap",
        "recording": "the copy tracks writes (qemu-img flag 'auto')",
        "inconsistent": "the copy was not saved cleanly (qemu-img flag 'in-use')",
        "persistent": "the copy is stored in the image (always so in qemu-img data)",
        "busy": "a block job is using the copy (QMP only)",
        "granularity": "bytes per bit; null when not given",
    },
    "layer": {
        "layer": "the layer's index (0 is the top)",
        "format": "the image format: qcow2, raw...",
        "compat": "qcow2 version: \"1.1\" (v3) or \"0.10\" (v2); null for other formats",
        "corrupt": "the qcow2 corrupt flag; null for other formats",
        "dirty": "the qcow2 dirty flag (unclean shutdown with lazy refcounts)",
        "backing": "the backing file, resolved as qemu opens it; null for a base",
        "backing_recorded": "the backing file's name as written in the image (may be relative)",
        "below_format": "the format of the next layer in the input; null for the last",
        "backing_format": "the recorded backing format; null when qemu would probe it",
        "bitmaps": "how many bitmaps this layer holds",
        "bitmaps_above": "how many bitmaps the layers above hold, all together",
    },
}

# Facts of the finding's layer, usable in message templates of any rule.
LAYER_FIELDS = ("filename", "format", "node")


@dataclass(frozen=True)
class Subjects:
    names: tuple[str, ...]  # the bitmap names being checked, in report order
    by_kind: dict[str, list[dict[str, Any]]]


def build(chain: Chain, requested: Optional[Sequence[str]]) -> Subjects:
    present: dict[str, list[int]] = {}  # name -> layers holding it, top first
    sizes: dict[str, set[int]] = {}  # name -> granularities of its copies
    for layer in chain.layers:
        for bitmap in layer.bitmaps:
            present.setdefault(bitmap.name, []).append(layer.layer)
            if bitmap.granularity is not None:
                sizes.setdefault(bitmap.name, set()).add(bitmap.granularity)
    names = tuple(dict.fromkeys(requested)) if requested else tuple(sorted(present))
    last = len(chain.layers) - 1
    bitmaps = [{"name": n, "first_layer": present[n][0] if n in present else None,
                "copies": len(present.get(n, ())), "chain_complete": chain.complete,
                "last_layer": last, "granularities": len(sizes.get(n, ()))} for n in names]
    wanted = set(names)
    above = dict.fromkeys(names, 0)
    copies, layers = [], []
    total = 0  # bitmaps in the layers above
    for layer in chain.layers:
        below = layer.layer + 1
        layers.append({"layer": layer.layer, "format": layer.format, "compat": layer.compat,
                       "corrupt": layer.corrupt, "dirty": layer.dirty, "backing": layer.backing,
                       "backing_recorded": layer.backing_recorded,
                       "below_format": chain.layers[below].format if below < len(chain.layers) else None,
                       "backing_format": layer.backing_format, "bitmaps": len(layer.bitmaps),
                       "bitmaps_above": total})
        total += len(layer.bitmaps)
        for b in layer.bitmaps:
            if b.name in wanted:
                copies.append({"name": b.name, "layer": layer.layer, "copies_above": above[b.name],
                               "recording": b.recording, "inconsistent": b.inconsistent,
                               "persistent": b.persistent, "busy": b.busy,
                               "granularity": b.granularity})
                above[b.name] += 1
    return Subjects(names, {"bitmap": bitmaps, "copy": copies, "layer": layers})
