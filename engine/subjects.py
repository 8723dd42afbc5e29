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
}

# Facts of the finding's layer, usable in message templates of any rule.
LAYER_FIELDS = ("filename", "format", "node")


@dataclass(frozen=True)
class Subjects:
    names: tuple[str, ...]  # the bitmap names being checked, in report order
    by_kind: dict[str, list[dict[str, Any]]]


def build(chain: Chain, requested: Optional[Sequence[str]]) -> Subjects:
    present: dict[str, list[int]] = {}  # name -> layers holding it, top first
    for layer in chain.layers:
        for bitmap in layer.bitmaps:
            present.setdefault(bitmap.name, []).append(layer.layer)
    names = tuple(dict.fromkeys(requested)) if requested else tuple(sorted(present))
    last = len(chain.layers) - 1
    bitmaps = [{"name": n, "first_layer": present[n][0] if n in present else None,
                "copies": len(present.get(n, ())), "chain_complete": chain.complete,
                "last_layer": last} for n in names]
    wanted = set(names)
    above = dict.fromkeys(names, 0)
    copies = []
    for layer in chain.layers:
        for b in layer.bitmaps:
            if b.name in wanted:
                copies.append({"name": b.name, "layer": layer.layer, "copies_above": above[b.name],
                               "recording": b.recording, "inconsistent": b.inconsistent,
                               "persistent": b.persistent, "busy": b.busy,
                               "granularity": b.granularity})
                above[b.name] += 1
    return Subjects(names, {"bitmap": bitmaps, "copy": copies})
