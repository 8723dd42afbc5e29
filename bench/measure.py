"""Running and measuring commands side by side.

Each command runs under a small wrapper process (this script, re-run with
--measure-child) that times it and takes its peak memory from wait4(). The wrapper
is needed for the memory: Linux carries the exec-ing process's old peak RSS into
the new program's ru_maxrss, so a child of a big process reports at least that
process's size. The wrapper is small, and its own start is outside the timed span.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

SLOW = 5.0  # seconds: a pair this slow keeps its warm-up runs and runs 3 times in all
SLOW_RUNS = 3
CHILD = "--measure-child"  # internal: bench/run re-run as the wrapper of one command
RUNNER = Path(__file__).resolve().parent / "run"


def say(message: str) -> None:
    """Progress, on stderr: stdout holds the report only."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def child_main(argv: Sequence[str]) -> int:
    """The wrapper: RESULT TIMEOUT RSS_CAP_KIB -- COMMAND...; writes a JSON result."""
    result, timeout, cap = Path(argv[0]), float(argv[1]), int(argv[2])
    command = list(argv[4:])
    stop = threading.Event()
    killed: list[str] = []
    start = time.perf_counter()
    proc = subprocess.Popen(command, start_new_session=True)

    def watch() -> None:
        while not stop.wait(0.05):
            why = ("timeout" if time.perf_counter() - start > timeout
                   else "memory" if _rss_kib(proc.pid) > cap else None)
            if why:
                killed.append(why)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stop.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    result.write_text(json.dumps({"seconds": seconds, "max_rss_kib": usage.ru_maxrss,
                                  "exit": proc.returncode, "killed": killed[0] if killed else None}))
    return 0


@dataclass(frozen=True)
class Command:
    label: str
    argv: tuple[str, ...]
    ok: tuple[int, ...] = (0,)  # exit statuses that mean it worked
    env: tuple[tuple[str, str], ...] = ()  # set for this command, over Limits.env


@dataclass(frozen=True)
class Limits:
    timeout: float  # seconds
    rss_kib: int
    env: Optional[dict[str, str]] = None  # the commands' environment; None: this one's

    def environment(self, command: Command) -> Optional[dict[str, str]]:
        if not command.env:
            return self.env
        return {**(os.environ if self.env is None else self.env), **dict(command.env)}


@dataclass(frozen=True)
class Run:
    seconds: float
    max_rss_kib: int  # the command's peak resident set (ru_maxrss, KiB on Linux)
    killed: Optional[str] = None  # "timeout" or "memory": the numbers are lower bounds


class Failed(Exception):
    pass


def run(command: Command, limits: Limits, stdout: Optional[Path] = None) -> Run:
    """Run once under the wrapper, output to /dev/null (or to `stdout`)."""
    with tempfile.TemporaryDirectory(prefix="kbrules-bench-run-") as scratch:
        result = Path(scratch) / "result.json"
        wrapper = [sys.executable, str(RUNNER), CHILD, str(result),
                   str(limits.timeout), str(limits.rss_kib), "--", *command.argv]
        with open(str(stdout) if stdout else os.devnull, "wb") as out, \
                tempfile.TemporaryFile() as err:
            done = subprocess.run(wrapper, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  env=limits.environment(command))
            err.seek(0)
            lines = err.read().decode("utf-8", "replace").strip().splitlines()
        if done.returncode != 0 or not result.exists():
            raise RuntimeError(f"the measuring wrapper failed (exit {done.returncode}): "
                               + "\n".join(lines[-5:]))
        got = json.loads(result.read_text())
    if got["killed"]:
        what = (f"over {limits.timeout:g} s" if got["killed"] == "timeout"
                else f"over {limits.rss_kib / 1024 / 1024:.1f} GiB")
        say(f"  {command.label}: stopped {what}")
        return Run(got["seconds"], got["max_rss_kib"], got["killed"])
    if got["exit"] not in command.ok:
        raise Failed(f"{command.label}: exit {got['exit']}" + (f": {lines[-1]}" if lines else ""))
    return Run(got["seconds"], got["max_rss_kib"])


@dataclass
class Pair:
    """Two commands measured interleaved (a b, b a, a b...), after one warm-up run each
    (b first). A pair whose warm-up took SLOW seconds or more keeps the warm-ups as
    samples and runs SLOW_RUNS times in all. A numerator stopped by a limit is not run
    again: its numbers are then lower bounds."""
    a: Command
    b: Command
    runs_a: list[Run] = field(default_factory=list)
    runs_b: list[Run] = field(default_factory=list)
    error: Optional[str] = None

    def measure(self, repeat: int, limits: Limits, target: Optional[float] = None) -> "Pair":
        try:
            warm_b = run(self.b, limits)
            if warm_b.killed:
                raise Failed(f"{self.b.label}: stopped by the {warm_b.killed} limit")
            if target is not None:
                # Let the numerator run long enough that a stopped one is a clear MISS.
                limits = Limits(max(limits.timeout, 1.5 * target * warm_b.seconds),
                                limits.rss_kib, limits.env)
            warm_a = run(self.a, limits)
            slow = max(warm_a.seconds, warm_b.seconds) >= SLOW or bool(warm_a.killed)
            if slow:
                self.runs_a.append(warm_a)
                self.runs_b.append(warm_b)
            total = min(repeat, SLOW_RUNS) if slow else repeat
            say(f"{self.a.label} vs {self.b.label} ({total} runs each)")
            for i in range(len(self.runs_b), total):
                if warm_a.killed:
                    self.runs_b.append(run(self.b, limits))
                    continue
                first, second = ((self.a, self.runs_a), (self.b, self.runs_b))[:: 1 if i % 2 else -1]
                first[1].append(run(first[0], limits))
                second[1].append(run(second[0], limits))
        except Failed as e:
            self.error = str(e)
            say(f"  failed: {e}")
        return self

    def median(self, which: str, what: str) -> float:
        runs = self.runs_a if which == "a" else self.runs_b
        return statistics.median(float(r.max_rss_kib if what == "memory" else r.seconds)
                                 for r in runs)

    def bound(self) -> bool:
        """The numerator was stopped: its median is a lower bound."""
        return any(r.killed for r in self.runs_a)


@dataclass(frozen=True)
class Row:
    what: str
    target: float
    pair: Optional[Pair]  # None: not measurable here (note says why)
    memory: bool = False
    note: str = ""
    reason: str = ""  # why this target


def _time(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def render(rows: Sequence[Row]) -> list[str]:
    table = [("ratio", "numerator / denominator (medians)", "ratio", "target", "")]
    for row in rows:
        p = row.pair
        if p is None or p.error is not None or not p.runs_a or not p.runs_b:
            why = row.note if p is None else (p.error or "no run")
            table.append((row.what, f"n/a: {why}", "-", f"<= {row.target:g}", "n/a"))
            continue
        what = "memory" if row.memory else "seconds"
        a, b = p.median("a", what), p.median("b", what)
        ratio, bound = a / b, p.bound()
        show = _mib if row.memory else _time
        verdict = ("MISS" if ratio > row.target else "?") if bound else \
            ("PASS" if ratio <= row.target else "MISS")
        gt = "> " if bound else ""
        table.append((row.what, f"{gt}{show(a)} / {show(b)}", f"{gt}{ratio:.2f}",
                      f"<= {row.target:g}", verdict))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = []
    for n, r in enumerate(table):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]),
                 r[3].ljust(widths[3]), r[4]]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    reasons = [f"  {row.what}: {row.reason}" for row in rows if row.reason]
    return lines + (["", "why each target:", *reasons] if reasons else [])


def _first_line(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _interpreter(script: Path) -> Optional[str]:
    """The Python a console script runs on, from its #! line; None if it is no Python."""
    try:
        with script.open("rb") as f:
            line = f.readline(512).decode("utf-8", "replace")
    except OSError:
        return None
    if not line.startswith("#!"):
        return None
    words = line[2:].split()
    if words and os.path.basename(words[0]) == "env" and len(words) > 1:
        words = [shutil.which(words[1]) or words[1]]
    return words[0] if words and "python" in os.path.basename(words[0]) else None


def find_kbrules() -> tuple[str, str, str]:
    """(the kbrules console script, the Python it runs on, a note on how it was found).
    A pyenv shim (a bash script that execs pyenv) is resolved to the real script: the
    shim's own start would be timed with every run of kbrules but not of the baselines."""
    found = shutil.which("kbrules")
    if found is None:
        raise SystemExit("bench/run: kbrules is not on PATH: pip install -e . first")
    script, note = found, ""
    if _interpreter(Path(found)) is None and shutil.which("pyenv"):
        done = subprocess.run(["pyenv", "which", "kbrules"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            script = done.stdout.strip()
            note = f" (resolved from the pyenv shim {found})"
    python = _interpreter(Path(script)) or sys.executable
    return script, python, note


def _proc_field(path: str, key: str) -> Optional[str]:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def ram_kib() -> int:
    total = _proc_field("/proc/meminfo", "MemTotal")
    return int(total.split()[0]) if total else 8 * 1024 * 1024


def machine(kbrules: str, python: str, note: str) -> list[str]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    return [
        f"date:      {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"cpu:       {cpu}, {cpus} cores usable, {ram_kib() // 1024} MiB RAM",
        f"system:    {platform.system()} {platform.release()} {platform.machine()}",
        f"python:    {_first_line([python, '--version'])} ({python})",
        f"kbrules:   {_first_line([kbrules, '--version'])}, {kbrules}{note}",
        f"qemu-img:  {_first_line(['qemu-img', '--version'])}",
        f"jq:        {_first_line(['jq', '--version'])} ({shutil.which('jq')})",
        f"gojq:      {_first_line(['gojq', '--version'])} ({shutil.which('gojq')})",
    ]


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"
