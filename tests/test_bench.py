"""bench/run --quick: the benchmark still runs end to end, measures every ratio it
declares, and its batch really checks every chain (so that it cannot rot between the
runs people make of it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import libvirtd

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_quick_benchmark_measures_every_ratio() -> None:
    # The --domain ratio needs libvirtd: the one of this test run, if it can run here
    # (then the benchmark neither starts nor stops its own).
    no_libvirt = libvirtd.missing()
    if no_libvirt is None:
        libvirtd.DAEMONS.ensure()
    done = subprocess.run([sys.executable, str(BENCH / "run"), "--quick"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    sys.path.insert(0, str(BENCH))
    try:
        from ratios import MEMORY, RATIOS
    finally:
        sys.path.remove(str(BENCH))
    for what in [r.what for r in RATIOS] + [m.what for m in MEMORY]:
        row = re.search(rf"^{re.escape(what)}\s+(.*)$", done.stdout, re.M)
        assert row, f"{what!r} missing:\n{done.stdout}"
        if "--domain" in what and no_libvirt is not None:
            assert f"n/a: {no_libvirt}" in row.group(0), row.group(0)
            continue
        assert re.search(r"\s\d+\.\d\d\s+<= [\d.]+\s+(PASS|MISS)$", row.group(0)), row.group(0)
    assert "note:" not in done.stdout, done.stdout


@pytest.mark.slow
def test_jq_profiler_runs() -> None:
    """bench/jqparts.py (the jq program timed by parts) still runs its every part."""
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "broken-chain.json"
    done = subprocess.run([sys.executable, str(BENCH / "jqparts.py"), "--repeat", "1", str(example)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("parse the input", "normalize: the fast path", "the program (check.jq)", "careful path"):
        assert done.stdout.count(label) == 2, done.stdout  # jq and gojq
