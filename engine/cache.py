"""The on-disk cache of rule files whose examples passed, so that later runs skip YAML
parsing, schema validation and the examples.

Where: $KBRULES_CACHE_DIR, else $XDG_CACHE_HOME/kbrules, else ~/.cache/kbrules; an
empty KBRULES_CACHE_DIR turns the cache off. An entry is keyed by the file's content
and by the engine's own files, so a change to either makes a new key.

An entry decides what kbrules says (a rule's check, its remediation), so it is
trusted only where no one else can have written it (kbrules runs as root):

- the directory must be a real directory (not a symlink) owned by the user running
  kbrules and not writable by group or others; otherwise one warning line, and no
  cache. kbrules creates it mode 0700, whatever the umask;
- entries are opened relative to that directory, never following a symlink, and
  must be regular files of that user, not group- or world-writable, of at most
  MAX_ENTRY bytes, that hold the digest of their own key and content: anything else
  is ignored, never trusted (and never a traceback);
- an entry is written to a new file (O_EXCL, mode 0600) renamed over the old one.

Best effort otherwise: a cache that cannot be read or written only makes kbrules
slower.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

MAX_ENTRY = 16 << 20  # bytes; the shipped rules make entries of about 100 KB
VERSION = 1
_warned: set[str] = set()


def directory() -> Optional[Path]:
    """The cache directory, or None when the cache is off."""
    base = os.environ.get("KBRULES_CACHE_DIR")
    if base == "":
        return None
    if base is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or ""
        base = os.path.join(xdg if os.path.isabs(xdg) else os.path.expanduser("~/.cache"), "kbrules")
    return Path(base)


@functools.lru_cache(maxsize=1)
def _engine_stamp() -> bytes:
    here = Path(__file__).resolve().parent
    stamp = [f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in sorted(here.glob("*.py"))]
    return "\n".join(stamp).encode() + b"\n"


def _key(content: bytes) -> str:
    return hashlib.sha256(_engine_stamp() + content).hexdigest()


def _seal(key: str, data: Any, lines: Any) -> str:
    """The digest an entry carries of its own key and content: a torn, truncated or
    edited entry does not match it."""
    body = json.dumps([VERSION, key, data, lines], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _warn(where: Path, why: str) -> None:
    if str(where) not in _warned:
        _warned.add(str(where))
        with contextlib.suppress(OSError, ValueError, AttributeError):
            print(f"kbrules: warning: rules cache {where} {why}: not used", file=sys.stderr)


def _safe(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


@contextlib.contextmanager
def _opened(create: bool) -> Iterator[Optional[int]]:
    """The cache directory, opened (a file descriptor), when it may be trusted."""
    where = directory()
    if where is None:
        yield None
        return
    try:
        if create:
            where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                where.mkdir(mode=0o700)
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if os.path.islink(where):
            _warn(where, "is a symlink")
        elif where.exists() and not where.is_dir():
            _warn(where, "is not a directory")
        elif e.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS):
            # (absent, or not ours to create: no cache, and nothing to warn about)
            _warn(where, f"cannot be opened ({e.strerror})")
        yield None
        return
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            _warn(where, f"belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})")
            yield None
        elif not _safe(st):
            _warn(where, f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}; "
                         f"chmod go-w it, or delete it)")
            yield None
        else:
            yield fd
    finally:
        os.close(fd)


def read(content: bytes) -> Optional[dict[str, Any]]:
    """The entry stored for a rules file of this content, if there is one that may be
    trusted: {"data": ..., "lines": ...}."""
    key = _key(content)
    with _opened(create=False) as fd:
        if fd is None:
            return None
        try:
            entry = os.open(f"rules-{key[:32]}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                            | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            return None
        try:
            with os.fdopen(entry, "rb") as f:
                st = os.fstat(f.fileno())
                if not (stat.S_ISREG(st.st_mode) and _safe(st) and st.st_size <= MAX_ENTRY):
                    return None
                value = json.loads(f.read(MAX_ENTRY + 1))
            if (isinstance(value, dict) and set(value) == {"version", "key", "data", "lines", "seal"}
                    and value["version"] == VERSION and value["key"] == key
                    and isinstance(value["data"], dict) and isinstance(value["lines"], dict)
                    and all(isinstance(k, str) and type(v) is int for k, v in value["lines"].items())
                    and value["seal"] == _seal(key, value["data"], value["lines"])):
                return {"data": value["data"], "lines": value["lines"]}
        except (OSError, ValueError, RecursionError):  # unreadable, not JSON, not UTF-8, too deep
            pass
    return None


def write(content: bytes, entry: dict[str, Any]) -> None:
    """Store an entry for a rules file of this content, atomically (a reader never sees
    half of it) and never through a symlink."""
    key = _key(content)
    value = {"version": VERSION, "key": key, "data": entry["data"], "lines": entry["lines"],
             "seal": _seal(key, entry["data"], entry["lines"])}
    with _opened(create=True) as fd:
        if fd is None:
            return
        target = f"rules-{key[:32]}.json"
        tmp = f".{target}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600, dir_fd=fd)
            with os.fdopen(out, "w", encoding="utf-8") as f:
                json.dump(value, f)
            os.replace(tmp, target, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
