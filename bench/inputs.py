"""The benchmark's inputs: qemu-img info --backing-chain JSON of synthesized deep,
wide and typical chains, small real chains made with qemu-img, and a running libvirt
domain."""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

IMAGES = "/var/lib/libvirt/images"  # where the synthesized layers claim to live
GIB = 1 << 30


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    bitmaps: int  # per layer: every layer holds the same names, as after snapshots


SHAPES = (Shape("small", 3, 3), Shape("typical", 10, 50), Shape("deep", 2000, 25), Shape("wide", 20, 5000),
          Shape("deep10x", 20000, 25))
# bench/run --quick: the same kinds of input, a tenth of the size or less.
QUICK_SHAPES = (Shape("small", 3, 3), Shape("typical", 10, 50), Shape("deep", 200, 25), Shape("wide", 20, 500),
                Shape("deep10x", 2000, 25))


def _flags(rng: random.Random) -> list[str]:
    """Mostly recording; a few disabled or left in use, so that there are findings."""
    roll = rng.random()
    if roll < 0.002:
        return []  # disabled
    if roll < 0.003:
        return ["in-use", "auto"]
    return ["auto"]


def _layer(shape: Shape, index: int, names: Sequence[str], rng: random.Random) -> dict[str, Any]:
    """One element of qemu-img info --output=json --backing-chain (qemu-img 7.2 key order)."""
    def path(i: int) -> str:
        return f"{IMAGES}/{shape.name}.{shape.layers - 1 - i:05d}.qcow2"  # base is 00000

    bitmaps = [{"flags": _flags(rng), "name": n, "granularity": 65536} for n in names]
    info: dict[str, Any] = {}
    base = index == shape.layers - 1
    if not base:
        info["backing-filename-format"] = "qcow2"
    info.update({
        "virtual-size": 100 * GIB, "filename": path(index), "cluster-size": 65536,
        "format": "qcow2", "actual-size": rng.randrange(200_000, 2 * GIB, 4096),
        "format-specific": {"type": "qcow2", "data": {
            "compat": "1.1", "compression-type": "zlib", "lazy-refcounts": False,
            "bitmaps": bitmaps, "refcount-bits": 16, "corrupt": False, "extended-l2": False}},
    })
    if not base:
        below = path(index + 1)
        info["full-backing-filename"] = below
        info["backing-filename"] = os.path.basename(below)
    info["dirty-flag"] = False
    return info


def synthesize(shape: Shape, directory: Path) -> Path:
    """The chain as qemu-img prints it (json.dump indent=4), written one layer at a time
    so that this process stays small (its peak memory would show in the children's)."""
    rng = random.Random(f"kbrules-bench-{shape.name}")
    names = [f"checkpoint-{i:05d}" for i in range(shape.bitmaps)]
    target = directory / f"{shape.name}.json"
    with target.open("w", encoding="utf-8") as f:
        f.write("[\n")
        for i in range(shape.layers):
            text = json.dumps(_layer(shape, i, names, rng), indent=4)
            f.write("\n".join("    " + line for line in text.split("\n")))
            f.write(",\n" if i < shape.layers - 1 else "\n")
        f.write("]\n")
    return target


def _qemu_img(args: Sequence[str], cwd: Path) -> None:
    done = subprocess.run(["qemu-img", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(args)} (in {cwd}): {done.stderr.strip()}")


def real_chain(directory: Path, number: int) -> Path:
    """2 or 3 real qcow2 layers, each with the same 1 to 3 bitmaps; one chain in ten
    has a disabled copy below the top (a finding). Returns the top image."""
    rng = random.Random(f"kbrules-bench-chain-{number}")
    directory.mkdir()
    layers = rng.choice((2, 3))
    names = [f"backup-{i}" for i in range(rng.choice((1, 2, 3)))]
    broken = (rng.randrange(1, layers), names[0]) if number % 10 == 0 else None
    below: Optional[str] = None
    for depth in range(layers - 1, -1, -1):  # base first; depth 0 is the top
        image = f"layer{depth}.qcow2"
        backing = ["-b", below, "-F", "qcow2"] if below else []
        _qemu_img(["create", "-q", "-f", "qcow2", *backing, image, "16M"], directory)
        for name in names:
            disable = ["--disable"] if broken == (depth, name) else []
            _qemu_img(["bitmap", "--add", *disable, "--", image, name], directory)
        below = image
    return directory / "layer0.qcow2"


def real_chains(directory: Path, count: int, jobs: int) -> list[Path]:
    directory.mkdir()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda n: real_chain(directory / f"chain{n:03d}", n), range(count)))


CHECKPOINTS = 4  # of the running domain


@dataclass
class RunningDomain:
    """A running TCG domain with one qcow2 disk (2 layers) and CHECKPOINTS checkpoints,
    made with tests/libvirtd.py (which starts libvirtd when none answers); close()
    removes it, its images, and the daemons it started."""

    name: str
    uri: str
    checkpoints: tuple[str, ...]
    domain: Any
    directory: Path

    def close(self) -> None:
        import libvirtd

        self.domain.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        libvirtd.DAEMONS.stop()


def running_domain() -> tuple[Optional[RunningDomain], str]:
    """The domain, or None and why there is none."""
    import libvirtd  # tests/libvirtd.py: bench/run puts tests/ on sys.path

    why = libvirtd.missing()
    if why:
        return None, why
    directory = libvirtd.images_dir()
    domain = None
    try:
        libvirtd.DAEMONS.ensure()
        libvirtd.qemu_img("create", "-q", "-f", "qcow2", "base.qcow2", "64M", cwd=directory)
        libvirtd.qemu_img("create", "-q", "-f", "qcow2", "-b", str(directory / "base.qcow2"), "-F", "qcow2",
                          "top.qcow2", "64M", cwd=directory)
        domain = libvirtd.Domain(directory, {"vda": directory / "top.qcow2"},
                                 name=f"kbrules-bench-{os.getpid()}").define()
        domain.start()
        names = tuple(f"c{i}" for i in range(CHECKPOINTS))
        for name in names:
            domain.checkpoint(name)
    except (AssertionError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        if domain is not None:
            domain.close()
        shutil.rmtree(directory, ignore_errors=True)
        libvirtd.DAEMONS.stop()
        return None, f"no domain could be made: {str(e).strip().splitlines()[-1]}"
    return RunningDomain(domain.name, libvirtd.URI, names, domain, directory), ""
