"""The on-disk cache of rule files whose examples passed, so that later runs skip YAML
parsing, schema validation and the examples.

Where: $KBRULES_CACHE_DIR, else $XDG_CACHE_HOME/kbrules, else ~/.cache/kbrules; an
empty KBRULES_CACHE_DIR turns the cache off. An entry is keyed by the file's content
and by the engine's own files, so a change to either makes a new key. Best effort: a
cache that cannot be read or written only makes kbrules slower.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional


def directory() -> Optional[Path]:
    """The cache directory, or None when the cache is off."""
    base = os.environ.get("KBRULES_CACHE_DIR")
    if base == "":
        return None
    if base is None:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kbrules")
    return Path(base)


def _path(content: bytes) -> Optional[Path]:
    where = directory()
    if where is None:
        return None
    digest = hashlib.sha256(_engine_stamp() + content).hexdigest()
    return where / f"rules-{digest[:32]}.json"


@functools.lru_cache(maxsize=1)
def _engine_stamp() -> bytes:
    here = Path(__file__).resolve().parent
    stamp = [f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in sorted(here.glob("*.py"))]
    return "\n".join(stamp).encode() + b"\n"


def read(content: bytes) -> Optional[dict[str, Any]]:
    """The entry stored for a rules file of this content, if any."""
    target = _path(content)
    if target is None:
        return None
    try:
        entry = json.loads(target.read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and {"data", "lines"} <= entry.keys() else None


def write(content: bytes, entry: dict[str, Any]) -> None:
    """Store an entry for a rules file of this content (atomically: a reader never sees
    half of it)."""
    target = _path(content)
    if target is None:
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, target)
    except OSError:
        pass
