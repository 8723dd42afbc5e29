#!/usr/bin/env python3
"""bench/jqparts.py: where the jq program's time goes. jq 1.6 has no profiler, so the
program (what `kbrules jq` prints) is cut into parts, each run to its end on the
benchmark's inputs, and each timed as CPU time (the best of --repeat runs: CPU time
moves least when other programs share the machine); a part's cost is its time less
the part before it. Compile times are of `jq -n` on a program that references a part
but never runs it.

    bench/jqparts.py              # deep and wide (bench/inputs.py), jq and gojq
    bench/jqparts.py --quick      # the small inputs of bench/run --quick
    bench/jqparts.py FILE.json    # any input of your own

Not part of the test run; needs kbrules installed (pip install -e .), jq and gojq.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inputs import QUICK_SHAPES, SHAPES, synthesize  # noqa: E402

from engine import jqbackend  # noqa: E402
from engine.loader import load_rules  # noqa: E402

# Each part runs everything before it too (its cost is the difference).
PARTS = (
    ("parse the input (jq length)", "length"),
    ("normalize: the fast path", "kb_fast(null) | .layers | length"),
    ("index: runs, sort, groups", "kb_fast(null) | kb_index([]; {}) | .names | length"),
    ("rules: every finding", "kb_fast(null) | kb_index([]; {}) as $ix | [kb_rule_findings($ix)] | length"),
    ("report: verdicts, JSON", "kb_fast(null) | kb_report([]; {}) | .errors"),
    ("the program (check.jq)", "kbrules_main($ARGS)"),
)
# What each part compiles (its definitions and what they call).
COMPILED = (
    ("the whole program", "kbrules_main($ARGS)"), ("careful path (refusals)", "kb_careful(null; null)"),
    ("fast path", "kb_fast(null)"), ("report and rules", "kb_report([]; {})"),
    ("rules alone", "kb_rule_findings({})"),
)


def cpu(argv: Sequence[str], repeat: int) -> float:
    """Best CPU time of the command, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)}: {done.stderr.decode()[:500]}")
        best = min(best, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return best


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/jqparts.py", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, help="JSON inputs (default: deep and wide)")
    parser.add_argument("--quick", action="store_true", help="the small inputs of bench/run --quick")
    parser.add_argument("--repeat", type=int, default=3, metavar="N", help="runs of each command (default 3)")
    args = parser.parse_args(argv)
    module = jqbackend.module(load_rules())
    tools = [t for t in ("jq", "gojq") if shutil.which(t)]
    with tempfile.TemporaryDirectory(prefix="kbrules-jqparts-") as scratch:
        work = Path(scratch)
        files = list(args.inputs) or [synthesize(s, work) for s in (QUICK_SHAPES if args.quick else SHAPES)
                                      if s.name in ("deep", "wide")]
        program = work / "part.jq"
        for tool in tools:
            print(f"{tool} ({subprocess.run([tool, '--version'], capture_output=True, text=True).stdout.strip()}):")
            for f in files:
                base = cpu([tool, ".", str(f)], args.repeat)
                print(f"  {f.name}: {tool} . takes {base * 1000:.0f} ms")
                before = 0.0
                for label, main_expr in PARTS:
                    program.write_text(module + "\n" + main_expr + "\n")
                    t = cpu([tool, "-f", str(program), str(f)], args.repeat)
                    print(f"    {label:30} {t * 1000:6.0f} ms  {t / base:5.2f} x {tool} .   "
                          f"(+{(t - before) * 1000:.0f} ms)")
                    before = t
            program.write_text(module + "\nempty\n")
            parsed = cpu([tool, "-n", "-f", str(program)], 2 * args.repeat)
            nothing = cpu([tool, "-n", "empty"], 2 * args.repeat)
            print(f"  start-up: {tool} -n empty {nothing * 1000:.0f} ms; reading the program, compiling nothing: "
                  f"+{(parsed - nothing) * 1000:.0f} ms; compiling:")
            for label, expr in COMPILED:
                program.write_text(module + f"\nif true then empty else {expr} end\n")
                t = cpu([tool, "-n", "-f", str(program)], 2 * args.repeat)
                print(f"    {label:30} {(t - parsed) * 1000:6.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
