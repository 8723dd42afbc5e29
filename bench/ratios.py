"""What bench/run measures: each ratio, its target and why, in one list.

A ratio is two commands measured side by side (numerator / denominator, medians of
interleaved runs). A memory ratio reads the peak memory of the runs of the time
ratio it names, so that nothing runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from measure import Command

LOAD_JSON = "import json,sys; json.load(open(sys.argv[1]))"
SHELL_LOOP = 'for f do qemu-img info --output=json --backing-chain "$f" >/dev/null; done'


@dataclass(frozen=True)
class Setup:
    """What the commands run on: the programs and the inputs made for this run."""

    kbrules: str
    python: str
    files: dict[str, Path]  # shape name -> its qemu-img JSON
    program: Path  # `kbrules jq` output: rules/check.jq
    tops: Sequence[Path]  # top images of the real chains

    def check(self, name: str, fmt: Optional[str] = "json") -> Command:
        extra = ("--format", fmt) if fmt else ()
        label = f"kbrules check{' --format ' + fmt if fmt else ''} {name}"
        return Command(label, (self.kbrules, "check", *extra, str(self.files[name])), ok=(0, 1))

    def load(self, name: str) -> Command:
        return Command(f"json.load {name}", (self.python, "-c", LOAD_JSON, str(self.files[name])))

    def jq(self, tool: str, name: str, filter_: bool) -> Command:
        argv = (tool, "-f", str(self.program)) if filter_ else (tool, ".")
        return Command(f"{tool} {'-f check.jq' if filter_ else '.'} {name}", (*argv, str(self.files[name])))

    def batch(self) -> Command:
        return Command(f"kbrules check --format jsonl ({len(self.tops)} chains)",
                       (self.kbrules, "check", "--format", "jsonl", *map(str, self.tops)), ok=(0, 1))

    def loop(self) -> Command:
        return Command(f"shell loop of qemu-img info ({len(self.tops)} chains)",
                       ("/bin/sh", "-c", SHELL_LOOP, "sh", *map(str, self.tops)))

    def python_floor(self) -> Command:
        return Command("python3 -c pass", (self.python, "-c", "pass"))


@dataclass(frozen=True)
class Ratio:
    what: str
    target: float
    reason: str  # one line: why this target
    numerator: Callable[[Setup], Command]
    denominator: Callable[[Setup], Command]
    repeat: int = 1  # times --repeat (short commands need more runs for a steady median)


@dataclass(frozen=True)
class MemoryRatio:
    what: str
    target: float
    reason: str
    of: str  # the `what` of the time ratio whose runs it reads


RATIOS: tuple[Ratio, ...] = (
    Ratio("check --format json deep / json.load", 1.5,
          "reading the JSON is the floor; judging it should cost about as much again at most",
          lambda s: s.check("deep"), lambda s: s.load("deep")),
    Ratio("check --format json wide / json.load", 1.5,
          "the same floor when one layer holds thousands of bitmaps",
          lambda s: s.check("wide"), lambda s: s.load("wide")),
    Ratio("check deep10x / check deep (linear)", 11,
          "ten times the input may cost ten times the time, plus start-up, never more",
          lambda s: s.check("deep10x"), lambda s: s.check("deep")),
    *(Ratio(f"{tool} -f check.jq {name} / {tool} . {name}", 3,
            "a shell user's jq filter should cost little more than jq reading the input",
            lambda s, t=tool, n=name: s.jq(t, n, True), lambda s, t=tool, n=name: s.jq(t, n, False))
      for tool in ("jq", "gojq") for name in ("deep", "wide")),
    Ratio("jq -f check.jq small / jq . small", 6,
          "jq 1.6 compiles the whole program on every run (about 50 us a construct; the exact "
          "refusals are a third of it): a 3-layer chain should cost at most 6 starts of jq",
          lambda s: s.jq("jq", "small", True), lambda s: s.jq("jq", "small", False), repeat=4),
    Ratio("check typical / python3 -c pass", 3,
          "one small chain is the common call: start-up should stay near Python's own",
          lambda s: s.check("typical", None), lambda s: s.python_floor(), repeat=4),
    Ratio("check real chains / qemu-img loop", 0.7,
          "many images in one call must beat a shell loop of qemu-img alone (qemu-img runs in parallel)",
          lambda s: s.batch(), lambda s: s.loop()),
)

MEMORY: tuple[MemoryRatio, ...] = (
    MemoryRatio("peak memory: check deep / json.load", 2,
                "the parsed JSON is the floor; the model and findings may add as much again",
                "check --format json deep / json.load"),
    MemoryRatio("peak memory: check wide / json.load", 2,
                "the same floor for one layer of thousands of bitmaps",
                "check --format json wide / json.load"),
)
