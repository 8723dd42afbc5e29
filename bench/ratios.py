"""What bench/run measures: each ratio, its target and why, in one list.

A ratio is two commands measured side by side (numerator / denominator, medians of
interleaved runs). A memory ratio reads the peak memory of the runs of the time
ratio it names, so that nothing runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from inputs import RunningDomain
from measure import Command

LOAD_JSON = "import json,sys; json.load(open(sys.argv[1]))"
SHELL_LOOP = 'for f do qemu-img info --output=json --backing-chain "$f" >/dev/null; done'
# The virsh calls that checking one running domain needs (engine/libvirt.py), one after
# another: sh -c VIRSH_CALLS sh URI DOMAIN CHECKPOINT...
VIRSH_CALLS = """u=$1 d=$2; shift 2
virsh -c "$u" domstate -- "$d" && virsh -c "$u" dumpxml -- "$d" &&
virsh -c "$u" checkpoint-list --name --topological -- "$d" || exit
for c do virsh -c "$u" checkpoint-dumpxml --no-domain -- "$d" "$c" || exit; done
virsh -c "$u" qemu-monitor-command -- "$d" \
  '{"execute":"query-named-block-nodes","arguments":{"flat":true}}'"""


@dataclass(frozen=True)
class Setup:
    """What the commands run on: the programs and the inputs made for this run."""

    kbrules: str
    python: str
    files: dict[str, Path]  # shape name -> its qemu-img JSON
    program: Path  # `kbrules jq` output: rules/check.jq
    tops: Sequence[Path]  # top images of the real chains
    domain: Optional[RunningDomain]  # None: libvirt cannot run here
    no_domain: str  # why not

    def check(self, name: str, fmt: Optional[str] = "json", cache: bool = True) -> Command:
        extra = ("--format", fmt) if fmt else ()
        label = f"kbrules check{' --format ' + fmt if fmt else ''} {name}{'' if cache else ' (no cache)'}"
        # Without the rules cache, as after an install or a rules change: an empty
        # KBRULES_CACHE_DIR turns it off.
        env = () if cache else (("KBRULES_CACHE_DIR", ""),)
        # deep10x is 135 MB of JSON, over the default limit of JSON input (32 MiB)
        return Command(label, (self.kbrules, "check", *extra, "--max-json-size", "1G",
                               str(self.files[name])), ok=(0, 1), env=env)

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

    def check_domain(self) -> Command:
        d = self.domain
        assert d is not None
        return Command(f"kbrules check --domain ({len(d.checkpoints)} checkpoints)",
                       (self.kbrules, "check", "--domain", d.name, "-c", d.uri, "--format", "json"), ok=(0, 1))

    def virsh_calls(self) -> Command:
        d = self.domain
        assert d is not None
        return Command(f"its {len(d.checkpoints) + 4} virsh calls, one after another",
                       ("/bin/sh", "-c", VIRSH_CALLS, "sh", d.uri, d.name, *d.checkpoints))


@dataclass(frozen=True)
class Ratio:
    what: str
    target: float
    reason: str  # one line: why this target
    numerator: Callable[[Setup], Command]
    denominator: Callable[[Setup], Command]
    repeat: int = 1  # times --repeat (short commands need more runs for a steady median)
    missing: Callable[[Setup], str] = lambda s: ""  # why it cannot be measured here, if it cannot


@dataclass(frozen=True)
class MemoryRatio:
    what: str
    target: float
    reason: str
    of: str  # the `what` of the time ratio whose runs it reads


# The targets are those of issue 15 (the jq ones, of issue 6).
RATIOS: tuple[Ratio, ...] = (
    Ratio("check --format json deep / json.load", 2,
          "reading the JSON is the floor; judging it should cost at most as much again",
          lambda s: s.check("deep"), lambda s: s.load("deep")),
    Ratio("check --format json wide / json.load", 2,
          "the same floor when one layer holds thousands of bitmaps",
          lambda s: s.check("wide"), lambda s: s.load("wide")),
    Ratio("check deep10x / check deep (linear)", 10.5,
          "ten times the input may cost ten times the time, plus a little, never more",
          lambda s: s.check("deep10x"), lambda s: s.check("deep")),
    *(Ratio(f"{tool} -f check.jq {name} / {tool} . {name}", 3,
            "a shell user's jq filter should cost little more than jq reading the input",
            lambda s, t=tool, n=name: s.jq(t, n, True), lambda s, t=tool, n=name: s.jq(t, n, False))
      for tool in ("jq", "gojq") for name in ("deep", "wide")),
    Ratio("jq -f check.jq small / jq . small", 6,
          "jq 1.6 compiles the whole program on every run (about 50 us a construct; the exact "
          "refusals are a third of it): a 3-layer chain should cost at most 6 starts of jq",
          lambda s: s.jq("jq", "small", True), lambda s: s.jq("jq", "small", False), repeat=4),
    Ratio("check typical / python3 -c pass", 2,
          "one small chain is the common call: start-up should stay near Python's own",
          lambda s: s.check("typical", None), lambda s: s.python_floor(), repeat=4),
    Ratio("check typical, no cache / python3 -c pass", 3,
          "after an install or a rules change: shipped rules as tested are not checked again",
          lambda s: s.check("typical", None, cache=False), lambda s: s.python_floor(), repeat=4),
    Ratio("check real chains / qemu-img loop", 0.6,
          "many images in one call must beat a shell loop of qemu-img alone (qemu-img runs in parallel)",
          lambda s: s.batch(), lambda s: s.loop()),
    Ratio("check --domain (running) / its virsh calls", 1.5,
          "a domain is checked in about the time virsh takes to tell its state (calls run at once)",
          lambda s: s.check_domain(), lambda s: s.virsh_calls(), repeat=2,
          missing=lambda s: "" if s.domain is not None else s.no_domain),
)

MEMORY: tuple[MemoryRatio, ...] = (
    MemoryRatio("peak memory: check deep / json.load", 1.5,
                "the parsed JSON is the floor; the model and findings may add half as much again",
                "check --format json deep / json.load"),
    MemoryRatio("peak memory: check wide / json.load", 1.5,
                "the same floor for one layer of thousands of bitmaps",
                "check --format json wide / json.load"),
)
