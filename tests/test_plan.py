"""The repair plan, proven by running it: for generated broken chains (real images:
every bitmap rule broken alone and together, several layers, odd names, raw and v2
layers, corrupt, dirty and probed-format layers), `kbrules plan`'s script runs with
`sh`, and then the chain checks clean (no error finding), every bitmap that was valid
is still there exactly as it was, and every layer's guest data is byte for byte the
same (qemu-img compare against a copy taken before)."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from engine import __version__
from engine.api import check_path, to_dict
from engine.draw import script
from engine.plan import plan
from helpers import assert_one_line_error, info_json, kbrules, make_chain, qemu_img

CHAINS = 220
NAMES = ["daily", "weekly", "it's", "with space", "-dash", "día", "a\nb", "x" * 1023,
         "$(touch pwned)", "'; rm -rf ~ #", "tab\there", "\\"]
STATES = ["ok", "ok", "ok", "disabled", "in-use", "disabled-in-use", None, None]  # None: no copy


@dataclass(frozen=True)
class Spec:
    layers: list[dict[str, str]]  # top first: bitmap name -> state
    formats: list[str]
    corrupt: Optional[int] = None  # a layer flagged corrupt
    probed: Optional[int] = None  # a layer whose backing format is not recorded
    dirty: Optional[int] = None  # a layer without bitmaps, left dirty (lazy refcounts)


def spec(number: int) -> Spec:
    rng = random.Random(f"kbrules-plan-{number}")
    depth = rng.randint(1, 4)
    formats = ["qcow2"] + ["qcow2-v2" if rng.random() < 0.1 else "qcow2" for _ in range(depth - 1)]
    if depth > 1 and rng.random() < 0.1:
        formats[-1] = "raw"
    names = rng.sample(NAMES, rng.randint(1, 3))
    layers = [{n: s for n in names if (s := rng.choice(STATES))} if fmt == "qcow2" else {}
              for fmt in formats]
    qcow2 = [i for i, fmt in enumerate(formats) if fmt != "raw"]
    corrupt = rng.choice(qcow2) if rng.random() < 0.15 else None
    probed = rng.randrange(depth - 1) if depth > 1 and rng.random() < 0.15 else None
    empty = [i for i, fmt in enumerate(formats) if fmt == "qcow2" and not layers[i] and i != corrupt]
    dirty = rng.choice(empty) if empty and rng.random() < 0.15 else None
    return Spec(layers, formats, corrupt, probed, dirty)


def forget_backing_format(path: Path) -> None:
    """Turn the qcow2 header extension that records the backing file's format into one
    that QEMU ignores: the image then looks like one that older qemu-img made."""
    with path.open("r+b") as f:
        header = f.read(104)
        version = struct.unpack(">I", header[4:8])[0]
        offset = 72 if version == 2 else struct.unpack(">I", header[100:104])[0]
        while True:
            f.seek(offset)
            kind, size = struct.unpack(">II", f.read(8))
            if kind == 0:
                raise AssertionError(f"{path} records no backing format")
            if kind == 0xE2792ACA:
                f.seek(offset)
                f.write(struct.pack(">I", 0x6B620001))
                return
            offset += 8 + ((size + 7) & ~7)


def build(directory: Path, s: Spec) -> Path:
    paths = make_chain(directory, s.layers, s.formats, data=True)
    if s.dirty is not None:
        path = paths[s.dirty]
        qemu_img("amend", "-o", "lazy_refcounts=on", path.name, cwd=directory)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 128k 4k", "-c", "abort", path.name],
                       cwd=directory, capture_output=True)
    if s.probed is not None:
        forget_backing_format(paths[s.probed])
    if s.corrupt is not None:
        with paths[s.corrupt].open("r+b") as f:  # incompatible feature bit 1: corrupt
            f.seek(79)
            byte = f.read(1)[0]
            f.seek(79)
            f.write(bytes([byte | 0x02]))
    return paths[0]


def bitmaps_of(top: Path) -> dict[str, list[tuple[int, tuple[str, ...], Optional[int]]]]:
    """name -> [(layer, flags, granularity)] as qemu-img reads them."""
    out: dict[str, list[tuple[int, tuple[str, ...], Optional[int]]]] = {}
    for index, layer in enumerate(info_json(top)):
        for b in (layer.get("format-specific") or {}).get("data", {}).get("bitmaps", []):
            out.setdefault(b["name"], []).append((index, tuple(sorted(b["flags"])), b.get("granularity")))
    return out


def prove(number: int, root: Path) -> Optional[str]:
    """None when the plan repairs the chain and loses nothing, else what went wrong."""
    s = spec(number)
    directory = root / f"chain{number:03d}"
    before_dir = root / f"chain{number:03d}-before"
    directory.mkdir()
    top = build(directory, s)
    before = check_path(top)
    kept = {name: copies for name, copies in bitmaps_of(top).items()
            if any(v.name == name and v.valid for v in before.bitmaps)}
    shutil.copytree(directory, before_dir)
    text = script([(str(top), before)], str(directory), __version__)
    (root / f"plan{number:03d}.sh").write_text(text)
    done = subprocess.run(["sh", str(root / f"plan{number:03d}.sh")], capture_output=True, text=True)
    problems = []
    if done.returncode != 0:
        problems.append(f"the plan failed (exit {done.returncode}): {done.stderr.strip()}")
    else:
        after = check_path(top)
        if after.has_error:
            left = sorted({f.rule for v in after.bitmaps for f in v.findings if f.severity == "error"}
                          | {f.rule for f in after.findings if f.severity == "error"})
            problems.append(f"error findings after the plan: {left}")
        now = bitmaps_of(top)
        for name, copies in kept.items():
            if now.get(name) != copies:
                problems.append(f"valid bitmap {name!r} changed: {copies} -> {now.get(name)}")
        for index, fmt in enumerate(s.formats):
            real = "raw" if fmt == "raw" else "qcow2"
            image = directory / f"layer{index}.{'img' if real == 'raw' else 'qcow2'}"
            same = subprocess.run(["qemu-img", "compare", "-f", real, "-F", real,
                                   str(before_dir / image.name), str(image)], capture_output=True, text=True)
            if same.returncode != 0:
                problems.append(f"layer {index} data changed: {same.stdout.strip()} {same.stderr.strip()}")
    if not problems:
        return None
    return (f"chain {number}: {s}\n" + "\n".join(problems) + f"\n--- plan:\n{text}--- report before:\n"
            + json.dumps(to_dict(before), indent=1, ensure_ascii=False)[:4000])


@pytest.mark.slow
def test_every_plan_repairs_its_chain_and_loses_nothing(tmp_path: Path) -> None:
    specs = [spec(n) for n in range(CHAINS)]
    # The generator covers what it must: each kind of damage, alone and together.
    states = {st for s in specs for layer in s.layers for st in layer.values()}
    assert states == {"ok", "disabled", "in-use", "disabled-in-use"}
    assert all(any(getattr(s, kind) is not None for s in specs) for kind in ("corrupt", "probed", "dirty"))
    assert {"qcow2-v2", "raw"} <= {f for s in specs for f in s.formats}
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(lambda n: prove(n, tmp_path), range(CHAINS)) if f]
    assert not failures, f"{len(failures)} of {CHAINS} plans failed:\n\n" + "\n\n".join(failures[:3])
    # Not a vacuous proof: most chains were broken, and their plans had commands.
    broken = 0
    for number in range(CHAINS):
        text = (tmp_path / f"plan{number:03d}.sh").read_text()
        broken += "\nqemu-img " in text
    assert broken >= CHAINS // 2, broken


def test_a_mistyped_name_gets_no_plan(tmp_path: Path) -> None:
    top = make_chain(tmp_path, [{"daily": "ok", "weekly": "ok"}, {"daily": "ok", "paused": "disabled"}])[0]
    run = kbrules("check", str(top), "--bitmap", "daliy", "--format", "json")
    report = run.json()
    finding, *others = report["bitmaps"][0]["findings"]
    assert [finding["rule"], *(f["rule"] for f in others)] == ["bitmap-exists"]
    # No finding tells anyone to start a bitmap under the mistyped name.
    assert "--add" not in run.out and "full backup" not in run.out
    assert finding["message"].startswith("no layer holds a bitmap 'daliy'; the chain holds, most alike first: 'daily'")
    assert report["plan"] == []
    text = kbrules("plan", str(top), "--bitmap", "daliy").out
    commands = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert commands == ["set -eu", f"cd -- {tmp_path}"] or commands[:1] == ["set -eu"], commands
    assert not any(c.startswith("qemu-img") for c in commands) and "# nothing to repair" in text


def test_plan_script_quotes_every_name(tmp_path: Path) -> None:
    """Hostile names stay data: the script removes exactly them, and a newline in a
    name cannot end a comment."""
    names = {"$(touch pwned)": "disabled", "a\nb; touch pwned": "disabled", "it's": "ok"}
    top = make_chain(tmp_path, [names])[0]
    report = check_path(top)
    text = script([(str(top), report)], str(tmp_path), __version__)
    for line in text.splitlines():
        assert line.startswith("#") or line.startswith(("set ", "cd ", "qemu-img ")) or not line or \
            line.endswith("'") or line.startswith("b; touch"), repr(line)
    plan_file = tmp_path / "plan.sh"
    plan_file.write_text(text)
    done = subprocess.run(["sh", str(plan_file)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "pwned").exists()
    assert set(bitmaps_of(top)) == set(names)
    assert not check_path(top).has_error


def test_layer_errors_come_first(tmp_path: Path) -> None:
    s = Spec([{"daily": "disabled"}, {}], ["qcow2", "qcow2"], corrupt=1, probed=0)
    top = build(tmp_path, s)
    steps = plan(check_path(top))
    layers = [st for st in steps if st.bitmap is None]
    assert [st.command[:2] for st in layers if st.command] == [("qemu-img", "rebase"), ("qemu-img", "check")] or \
        [st.command[:2] for st in layers if st.command] == [("qemu-img", "check"), ("qemu-img", "rebase")]
    assert steps.index(layers[-1]) < min(i for i, st in enumerate(steps) if st.bitmap == "daily")


def test_plan_with_engine_jq_points_to_the_plan_as_data(tmp_path: Path) -> None:
    top = make_chain(tmp_path, [{"daily": "disabled"}])[0]
    assert_one_line_error(kbrules("plan", "--engine", "jq", str(top)), "--engine jq --format json", "'plan'")
    # ... where the jq program gives the plan that kbrules plan prints.
    python = kbrules("check", str(top), "--format", "json").json()["plan"]
    assert python and kbrules("check", "--engine", "jq", "--format", "json", str(top)).json()["plan"] == python
