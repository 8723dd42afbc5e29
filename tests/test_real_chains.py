"""kbrules check on REAL chains made with qemu-img: each rule broken alone and
together, qcow2 v2 and raw layers, odd bitmap names, one chain given three ways,
--bitmap, qemu-img failures, and an image held open read-write by qemu-nbd."""

from __future__ import annotations

import itertools
import json
import shlex
import os
import re
import subprocess
import sys
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import pytest

from helpers import Run, assert_one_line_error, info_json, info_text, kbrules, make_chain, qemu_img, verdicts

Expected = Mapping[str, tuple[bool, list[tuple[str, int]]]]
OK = (True, [])

# Names that need care: shell quoting, JSON escaping, terminal control characters,
# template braces, Unicode kept as given (NFD is not normalized to NFC), and the
# longest name qemu-img accepts.
ODD_NAMES = {
    "single-quote": "it's",
    "double-quote": 'say "hi"',
    "space": "two words",
    "backslash": "back\\slash",
    "unicode": "día-ü-✓",
    "nfd": "e\u0301",
    "braces": "{name}|sh",
    "control": "new\nline\ttab\x1b[1mbold\rret",
    "longest": "x" * 1023,
}
# How the text report must show ODD_NAMES["control"]: escaped, on one line.
CONTROL_SHOWN = "new\\nline\\ttab\\u001b[1mbold\\rret"


@dataclass(frozen=True)
class Case:
    layers: Sequence[Mapping[str, str]]  # top first: bitmap name -> make_chain state
    expected: Expected  # verdicts(), for every name in the chain
    formats: Optional[Sequence[str]] = None


def _keep(states: Mapping[str, str]) -> dict[str, str]:
    """A layer plus 'keep', a bitmap valid everywhere: breaking one bitmap must not
    touch the others."""
    return {**states, "keep": "ok"}


CASES: dict[str, Case] = {
    "valid-1-layer": Case([{"a": "ok"}], {"a": OK}),
    "valid-2-layers": Case([{"a": "ok", "b": "ok"}, {"a": "ok"}], {"a": OK, "b": OK}),
    "valid-3-layers": Case([{"a": "ok", "b": "ok", "c": "ok"}, {"a": "ok", "b": "ok"}, {"a": "ok"}],
                           {"a": OK, "b": OK, "c": OK}),
    "valid-5-layers": Case([{"a": "ok", "new": "ok"}, {"a": "ok"}, {"a": "ok"}, {"a": "ok"}, {"a": "ok"}],
                           {"a": OK, "new": OK}),
    "no-bitmaps": Case([{}, {}], {}),
    "gap": Case([_keep({"a": "ok"}), _keep({}), _keep({"a": "ok"})],
                {"a": (False, [("bitmap-contiguous", 2)]), "keep": OK}),
    "missing-in-top": Case([_keep({}), _keep({"a": "ok"}), _keep({"a": "ok"})],
                           {"a": (False, [("bitmap-in-top", 0), ("bitmap-contiguous", 1),
                                          ("bitmap-contiguous", 2)]), "keep": OK}),
    "disabled-in-middle": Case([_keep({"a": "ok"}), _keep({"a": "disabled"}), _keep({"a": "ok"})],
                               {"a": (False, [("bitmap-recording", 1)]), "keep": OK}),
    "in-use-in-top": Case([_keep({"a": "in-use"}), _keep({"a": "ok"})],
                          {"a": (False, [("bitmap-consistent", 0)]), "keep": OK}),
    "in-use-in-base": Case([_keep({"a": "ok"}), _keep({"a": "ok"}), _keep({"a": "in-use"})],
                           {"a": (False, [("bitmap-consistent", 2)]), "keep": OK}),
    # Combinations: one copy failing two rules; one bitmap failing every offline rule.
    "disabled-and-in-use-copy": Case(
        [_keep({"a": "ok"}), _keep({"a": "disabled-in-use"}), _keep({"a": "ok"})],
        # In use and disabled: the root cause only (a crash stops recording too).
        {"a": (False, [("bitmap-consistent", 1)]), "keep": OK}),
    "every-rule-on-one-bitmap": Case(
        [_keep({}), _keep({"a": "disabled"}), _keep({}), _keep({"a": "in-use"})],
        {"a": (False, [("bitmap-in-top", 0), ("bitmap-contiguous", 1), ("bitmap-contiguous", 3),
                       ("bitmap-consistent", 3), ("bitmap-recording", 1)]), "keep": OK}),
    "each-bitmap-broken-differently": Case(
        [_keep({"gap": "ok", "off": "ok", "used": "in-use"}),
         _keep({"off": "disabled", "used": "ok", "low": "ok"}),
         _keep({"gap": "ok", "low": "ok"})],
        {"gap": (False, [("bitmap-contiguous", 2)]), "keep": OK,
         "low": (False, [("bitmap-in-top", 0), ("bitmap-contiguous", 1), ("bitmap-contiguous", 2)]),
         "off": (False, [("bitmap-recording", 1)]), "used": (False, [("bitmap-consistent", 0)])}),
    # Layers that cannot hold bitmaps: fine below the run, a gap above a copy.
    "qcow2-v2-middle": Case([{"a": "ok"}, {}, {}], {"a": OK}, ["qcow2", "qcow2-v2", "qcow2"]),
    "qcow2-v2-middle-gap": Case([{"a": "ok", "b": "ok"}, {}, {"a": "ok"}],
                                {"a": (False, [("bitmap-contiguous", 2)]), "b": OK},
                                ["qcow2", "qcow2-v2", "qcow2"]),
    "raw-base": Case([{"a": "ok"}, {"a": "ok"}, {}], {"a": OK}, ["qcow2", "qcow2", "raw"]),
    "v2-and-raw": Case([{"a": "ok", "b": "ok"}, {}, {}], {"a": OK, "b": OK},
                       ["qcow2", "qcow2-v2", "raw"]),
    "odd-names": Case([{n: "ok" for n in ODD_NAMES.values()}, {n: "in-use" for n in ODD_NAMES.values()}],
                      {n: (False, [("bitmap-consistent", 1)]) for n in ODD_NAMES.values()}),
}


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[Path]]:
    """CASES[key] built once per module (checking never changes an image)."""
    built: dict[str, list[Path]] = {}

    def get(key: str) -> list[Path]:
        if key not in built:
            case = CASES[key]
            built[key] = make_chain(tmp_path_factory.mktemp(key), case.layers, case.formats)
        return built[key]
    return get


WAYS = ("path", "file", "stdin")


def check_way(way: str, top: Path, *args: str) -> Run:
    """kbrules check on the chain of `top`: the image path, a file holding qemu-img's
    --backing-chain JSON (made in top's directory), or that JSON on stdin."""
    if way == "path":
        return kbrules("check", str(top), *args)
    text = info_text(top)
    if way == "file":
        file = top.parent / "chain.json"
        file.write_text(text, encoding="utf-8")
        return kbrules("check", str(file), *args)
    return kbrules("check", "-", *args, stdin=text.encode())


def report(run: Run, directory: Path) -> Any:
    """The JSON report with file names made relative to `directory`: the path way names
    files as given (absolute), qemu-img JSON made in `directory` relatively."""
    return json.loads(run.out.replace(f"{directory}/", ""))


def exit_code(expected: Expected) -> int:
    return 0 if all(valid for valid, _ in expected.values()) else 1


# 1. Rules broken alone and together; valid chains.

@pytest.mark.parametrize("key", CASES)
def test_verdicts(key: str, chains: Callable[[str], list[Path]]) -> None:
    case, paths = CASES[key], chains(key)
    run = kbrules("check", str(paths[0]), "--format", "json")
    assert verdicts(run) == case.expected
    assert run.code == exit_code(case.expected)
    out = run.json()
    assert [b["name"] for b in out["bitmaps"]] == sorted(case.expected)
    # Chain-level: only the note that a raw or v2 layer below bitmaps ends their runs.
    formats = case.formats or ["qcow2"] * len(case.layers)
    notes = [("layer-cannot-hold-bitmaps", "info", i) for i, fmt in enumerate(formats)
             if fmt != "qcow2" and any(case.layers[:i])]
    assert [(f["rule"], f["severity"], f["layer"]) for f in out["findings"]] == notes
    for b in out["bitmaps"]:
        for f in b["findings"]:
            assert (f["severity"], f["filename"], f["caveat"]) == ("error", str(paths[f["layer"]]), None)
            assert f"bitmap '{b['name']}'" in f["message"]
    text = kbrules("check", str(paths[0]))
    valid = sum(v for v, _ in case.expected.values())
    assert text.code == run.code
    chain_level = f"; {len(notes)} chain finding{'s' if len(notes) != 1 else ''} (0 errors)" if notes else ""
    assert text.out.endswith(f"checked: {valid} valid, {len(case.expected) - valid} not valid{chain_level}\n")


# 2. qcow2 v2 and raw layers: the chain entries.

@pytest.mark.parametrize("way", WAYS)
def test_chain_entries(way: str, chains: Callable[[str], list[Path]]) -> None:
    paths = chains("v2-and-raw")
    out = check_way(way, paths[0], "--format", "json").json()
    # The path way names files as given (absolute here); qemu-img JSON, as qemu-img ran.
    names = [str(p) if way == "path" else p.name for p in paths]
    assert out["source"] == "qemu-img"
    assert out["chain"] == [{"layer": i, "filename": n, "format": fmt, "node": None}
                            for i, (n, fmt) in enumerate(zip(names, ["qcow2", "qcow2", "raw"]))]


# 4. One chain, three ways, one report.

@pytest.mark.parametrize("key", CASES)
def test_three_ways_give_one_report(key: str, chains: Callable[[str], list[Path]]) -> None:
    top = chains(key)[0]
    runs = {way: check_way(way, top, "--format", "json") for way in WAYS}
    reports = {way: report(run, top.parent) for way, run in runs.items()}
    assert reports["file"] == reports["path"]
    assert reports["stdin"] == reports["path"]
    assert {run.code for run in runs.values()} == {exit_code(CASES[key].expected)}
    assert verdicts(runs["stdin"]) == CASES[key].expected


# 3. Odd bitmap names.

@pytest.mark.parametrize("name", ODD_NAMES.values(), ids=ODD_NAMES.keys())
def test_odd_name_selected_and_kept_exactly(name: str, chains: Callable[[str], list[Path]]) -> None:
    run = kbrules("check", str(chains("odd-names")[0]), "--bitmap", name, "--format", "json")
    assert run.code == 1
    (bitmap,) = run.json()["bitmaps"]
    assert bitmap["name"] == name
    assert [(f["rule"], f["layer"]) for f in bitmap["findings"]] == [("bitmap-consistent", 1)]
    assert f"bitmap '{name}'" in bitmap["findings"][0]["message"]


def test_qemu_img_refuses_1024_characters(tmp_path: Path) -> None:
    # So ODD_NAMES["longest"] (1023) is the longest name a real image can hold.
    image = make_chain(tmp_path, [{}])[0]
    done = subprocess.run(["qemu-img", "bitmap", "--add", "--", str(image), "x" * 1024],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "Name length exceeds maximum (1023 characters)" in done.stderr


# make_chain states per layer (None: no copy), and the one finding they give.
BREAKS: dict[str, tuple[list[Optional[str]], str, int]] = {
    "gap": (["ok", None, "ok"], "bitmap-contiguous", 2),
    "disabled": (["ok", "disabled"], "bitmap-recording", 1),
    "in-use": (["ok", "in-use"], "bitmap-consistent", 1),
}
# The shell command in a remediation: two POSIX-quoted words, as {x|sh} writes them.
REMOVE = re.compile(r"qemu-img bitmap --remove -- (?:'[^']*'|\\')+ (?:'[^']*'|\\')+")
REMOVALS = [pytest.param(name, how, id=f"{nid}-{how}")
            for (nid, name), how in zip(ODD_NAMES.items(), itertools.cycle(BREAKS))]
# A leading '-' would be an option to qemu-img without the '--' in the remediation.
REMOVALS.append(pytest.param("-dash", "gap", id="leading-dash-gap"))


@pytest.mark.parametrize("name, how", REMOVALS)
def test_remediation_command_removes_the_broken_copy(
        name: str, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    states, rule, layer = BREAKS[how]
    # The directory name needs quoting too; kbrules runs from its parent on a relative
    # path, so the command must run there.
    where = tmp_path / "it's a dir"
    where.mkdir()
    make_chain(where, [{name: s} if s else {} for s in states])
    monkeypatch.chdir(tmp_path)
    top = f"{where.name}/layer0.qcow2"
    # --bitmap=NAME: argparse would take a separate "-dash" for an option.
    run = kbrules("check", top, f"--bitmap={name}", "--format", "json")
    assert verdicts(run) == {name: (False, [(rule, layer)])}
    remediation = run.json()["bitmaps"][0]["findings"][0]["remediation"]
    command = REMOVE.search(remediation)
    assert command, remediation
    done = subprocess.run(["sh", "-c", command.group(0)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = info_json(where / f"layer{layer}.qcow2", backing_chain=False)["format-specific"]["data"]
    assert name not in [b["name"] for b in data.get("bitmaps", [])]
    # Only the top copy is left: a valid bitmap.
    after = kbrules("check", top, f"--bitmap={name}", "--format", "json")
    assert (after.code, verdicts(after)) == (0, {name: OK})


def test_text_escapes_control_characters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = ODD_NAMES["control"]
    paths = make_chain(tmp_path, [{name: "ok"}, {name: "disabled"}])
    monkeypatch.chdir(tmp_path)
    run = kbrules("check", paths[0].name)
    # The same chain with a plain name as long as the escaped one: the texts must be
    # equal line for line once the escaped name is swapped for it.
    plain_name = "p" * len(CONTROL_SHOWN)
    info = info_json(paths[0])
    for layer in info:
        for bitmap in layer["format-specific"]["data"]["bitmaps"]:
            bitmap["name"] = plain_name
    plain = kbrules("check", "-", stdin=json.dumps(info).encode())
    assert run.code == plain.code == 1
    assert CONTROL_SHOWN in run.out
    # The chain picture's column header shows the name cut to its column ("…"),
    # escaped first: the escapes are cut, never the raw characters.
    assert "  " + CONTROL_SHOWN[:15] + "…" in run.out

    def uncut(text: str, name: str) -> list[object]:
        # Commands compare word by word: the shell quotes the escaped name, not the plain one.
        return [[w.replace(name, plain_name) for w in shlex.split(line)]
                if line.strip().startswith("qemu-img ") else line.replace(name, plain_name)
                for line in text.splitlines() if "…" not in line]

    assert uncut(run.out, CONTROL_SHOWN) == uncut(plain.out, plain_name)
    assert not [c for c in run.out if unicodedata.category(c) == "Cc" and c != "\n"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_stdout_that_is_not_utf8(fmt: str, chains: Callable[[str], list[Path]]) -> None:
    # As the console script runs on a terminal whose locale is not UTF-8. Exit 1
    # must mean "a bitmap is not valid", never "kbrules crashed".
    done = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(chains("odd-names")[0]),
                           "--format", fmt], capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert b"Traceback" not in done.stderr
    assert (done.returncode, done.stderr) == (1, b"")
    if fmt == "json":
        assert [b["name"] for b in json.loads(done.stdout)["bitmaps"]] == sorted(ODD_NAMES.values())


# 5. --bitmap.

BITMAP_CHAIN = [{"b": "ok", "a": "ok", "B": "ok", "ä": "ok", "bad": "in-use"},
                {"a": "ok", "only-base": "ok"}]
SELECTIONS = {
    # Every name in the chain, by code point (not by locale: "B" < "a", "ä" last).
    "all": ([], ["B", "a", "b", "bad", "only-base", "ä"], 1),
    # In the given order, once each; the broken ones are not looked at.
    "given-order-deduplicated": (["b", "a", "b", "ä"], ["b", "a", "ä"], 0),
    "absent-everywhere": (["nowhere"], ["nowhere"], 1),
    "absent-among-valid": (["a", "nowhere"], ["a", "nowhere"], 1),
}
SELECTED = {"B": OK, "a": OK, "b": OK, "ä": OK, "bad": (False, [("bitmap-consistent", 0)]),
            "only-base": (False, [("bitmap-in-top", 0), ("bitmap-contiguous", 1)]),
            "nowhere": (False, [("bitmap-exists", 0)])}


@pytest.fixture(scope="module")
def bitmap_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chain(tmp_path_factory.mktemp("bitmap-option"), BITMAP_CHAIN)[0]


@pytest.mark.parametrize("selection", SELECTIONS)
def test_bitmap_option(selection: str, bitmap_chain: Path) -> None:
    names, order, code = SELECTIONS[selection]
    run = kbrules("check", str(bitmap_chain), "--format", "json",
                  *itertools.chain.from_iterable(("--bitmap", n) for n in names))
    assert [b["name"] for b in run.json()["bitmaps"]] == order
    assert verdicts(run) == {n: SELECTED[n] for n in order}
    assert run.code == code


# 6. qemu-img failures and unusable paths: one line, exit 2.

def _missing_backing(d: Path) -> list[str]:
    paths = make_chain(d, [{"a": "ok"}, {"a": "ok"}])
    paths[1].unlink()
    return [str(paths[0])]


def _backing_loop(d: Path) -> list[str]:
    paths = make_chain(d, [{}, {}])
    qemu_img("rebase", "-u", "-b", paths[0].name, "-F", "qcow2", paths[1].name, cwd=d)
    return [str(paths[0])]


def _not_an_image(d: Path) -> list[str]:
    (d / "notes.txt").write_text("not a disk\n")
    return ["--image-format", "qcow2", str(d / "notes.txt")]


# Found by kbrules' own reading of the headers (engine/inspect.py), before qemu-img runs.
FAILURES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    "missing-backing-file": (_missing_backing, [
        "/layer0.qcow2: layer 1 (", "/layer1.qcow2), the backing file of layer 0, does not exist"]),
    "backing-loop": (_backing_loop, [
        "/layer0.qcow2: layer 2 (", "/layer0.qcow2), the backing file of layer 1, is layer 0 again: "
        "the backing files form a loop"]),
    "directory": (lambda d: [str(d)], ["is a directory"]),
    "missing-path": (lambda d: [str(d / "nowhere.qcow2")], ["nowhere.qcow2: no such file"]),
    "not-an-image": (_not_an_image, [
        "notes.txt: layer 0 (", "notes.txt) is not a valid qcow2 image (given with --image-format): "
        "no qcow2 magic number"]),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_failure_is_one_line(failure: str, tmp_path: Path) -> None:
    setup, says = FAILURES[failure]
    run = kbrules("check", *setup(tmp_path))
    assert_one_line_error(run, *says)


# 7. An image held open read-write; a chain cut short.

LOCKED = 'Failed to get shared "write" lock'


@contextmanager
def served(image: Path) -> Iterator[None]:
    """qemu-nbd holding `image` open read-write until the block ends."""
    socket = image.parent / "nbd.sock"
    server = subprocess.Popen(
        ["qemu-nbd", "-t", "-f", "qcow2", f"--socket={socket}", str(image)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Wait for the socket, which qemu-nbd makes once it holds the image. Probing
        # with qemu-img before that races with qemu-nbd's own open: the probe's read
        # lock can make qemu-nbd fail to take the write lock.
        deadline = time.monotonic() + 30  # generous: CI machines are shared
        while not socket.exists():
            assert server.poll() is None, f"qemu-nbd exited: {server.communicate()[1]!r}"
            assert time.monotonic() < deadline, "qemu-nbd never opened the image"
            time.sleep(0.02)
        probe = subprocess.run(["qemu-img", "info", str(image)], capture_output=True, text=True)
        assert probe.returncode != 0 and LOCKED in probe.stderr, probe.stderr
        yield
    finally:
        server.terminate()
        try:
            server.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


# Top: held by qemu-nbd. Base: opened read-only by it, with real damage of its own.
HELD_CHAIN = [{"a": "ok", "top-only": "ok"}, {"a": "in-use", "low": "disabled"}]


def test_image_in_use(tmp_path: Path) -> None:
    top = make_chain(tmp_path, HELD_CHAIN)[0]
    with served(top):
        locked = kbrules("check", str(top))
        shared = kbrules("check", "--force-share", str(top), "--format", "json")
    assert_one_line_error(locked, "the image is in use", "virsh qemu-monitor-command",
                          "query-named-block-nodes", "--force-share")
    # qemu-nbd marked every top bitmap in-use; the base's flags are its own.
    assert shared.code == 1
    assert verdicts(shared) == {
        "a": (False, [("bitmap-consistent", 0), ("bitmap-consistent", 1)]),
        "low": (False, [("bitmap-in-top", 0), ("bitmap-contiguous", 1), ("bitmap-recording", 1)]),
        "top-only": (False, [("bitmap-consistent", 0)])}
    findings = [f for b in shared.json()["bitmaps"] for f in b["findings"]]
    assert {f["layer"] for f in findings} == {0, 1}
    for f in findings:
        assert (f["caveat"] is not None) == (f["layer"] == 0), f
    # Closed cleanly, the top's flags are gone and only the real damage is left.
    after = kbrules("check", str(top), "--format", "json")
    assert verdicts(after) == {
        "a": (False, [("bitmap-consistent", 1)]),
        "low": (False, [("bitmap-in-top", 0), ("bitmap-contiguous", 1), ("bitmap-recording", 1)]),
        "top-only": OK}


def test_single_image_json_of_a_top_with_backing(tmp_path: Path) -> None:
    top = make_chain(tmp_path, [{"a": "ok"}, {"a": "ok", "b": "ok"}])[0]
    run = kbrules("check", "-", "--format", "json", stdin=info_text(top, backing_chain=False).encode())
    assert run.code == 1
    out = run.json()
    assert [layer["filename"] for layer in out["chain"]] == [top.name]
    # Only the top was given: 'b' is not seen, and 'a' cannot be judged below it.
    assert verdicts(run) == {"a": (False, [("chain-complete", 0)])}
