"""Property-based tests of `kbrules check - --format json` on generated input.

1. Any JSON value at all (biased toward the keys and values real inputs use): the only
   outcomes are a report that keeps the JSON contract (exit 0/1, empty stderr) or one
   line on stderr and nothing on stdout (exit 2). Never a traceback.
2. Well-formed qemu-img and QMP inputs: a report, naming every bitmap of the input, with
   libvirt's verdict (written again here, independently, as the oracle).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.loader import load_rules
import builders
from builders import bitmap, qmp_bitmap
from helpers import Run, assert_one_line_error, kbrules
from jqcases import any_json, broken

RULES = load_rules()




# ------------------------------------------------------------------ the contract

REPORT_KEYS = {"ok", "errors", "warnings", "source", "trust_backing", "chain", "rules", "bitmaps",
               "findings", "domain",
               "checkpoints", "newest_usable_checkpoint", "plan"}
STEP_KEYS = {"bitmap", "layer", "say", "command"}
CHAIN_KEYS = {"layer", "filename", "format", "node"}
VERDICT_KEYS = {"name", "valid", "findings"}
FINDING_KEYS = {"rule", "severity", "layer", "filename", "message", "remediation", "caveat"}
RULE_IDS = [r.id for r in RULES]


def check_finding(f: Any, layers: int) -> None:
    assert isinstance(f, dict) and set(f) == FINDING_KEYS, f
    assert f["rule"] in RULE_IDS and f["severity"] in ("error", "warning", "info"), f
    assert isinstance(f["layer"], int) and 0 <= f["layer"] < layers, f
    assert isinstance(f["filename"], str), f  # as the input gives it, even ""
    assert all(isinstance(f[k], str) and f[k] for k in ("message", "remediation")), f
    assert f["caveat"] is None or isinstance(f["caveat"], str), f


def check_outcome(run: Run) -> Optional[dict[str, Any]]:
    """The only allowed outcomes; the report when there is one."""
    if run.code == 2:
        assert_one_line_error(run)
        return None
    assert run.code in (0, 1), run
    assert run.err == "", run.err
    run.out.encode("utf-8")  # strict: a real stdout must be able to print it
    report = run.json()
    assert isinstance(report, dict) and set(report) == REPORT_KEYS, report
    assert report["source"] in ("qemu-img", "qmp")
    assert report["rules"] == RULE_IDS
    chain = report["chain"]
    assert isinstance(chain, list) and chain
    for i, layer in enumerate(chain):
        assert set(layer) == CHAIN_KEYS and layer["layer"] == i, layer
        assert isinstance(layer["filename"], str) and isinstance(layer["format"], str)
        assert layer["node"] is None if report["source"] == "qemu-img" else isinstance(layer["node"], str)
    errors = False
    for verdict in report["bitmaps"]:
        assert set(verdict) == VERDICT_KEYS and isinstance(verdict["name"], str), verdict
        for f in verdict["findings"]:
            check_finding(f, len(chain))
        bad = any(f["severity"] == "error" for f in verdict["findings"])
        assert verdict["valid"] is (not bad), verdict
        errors |= bad
    for f in report["findings"]:
        check_finding(f, len(chain))
        errors |= f["severity"] == "error"
    assert run.code == (1 if errors else 0), (run.code, errors)
    # A plan exactly when something is not valid; each step about a checked bitmap or a
    # layer, its command (when there is one) a list of words.
    names = [v["name"] for v in report["bitmaps"]]
    assert not report["plan"] or errors, report["plan"]
    for step in report["plan"]:
        assert set(step) == STEP_KEYS and isinstance(step["say"], str) and step["say"], step
        assert step["bitmap"] is None or step["bitmap"] in names, step
        assert step["layer"] is None or 0 <= step["layer"] < len(chain), step
        command = step["command"]
        assert command is None or (isinstance(command, list) and command
                                   and all(isinstance(w, str) for w in command)), step
    # The overall verdict says the same as the exit status, and counts what it counts.
    found = [f["severity"] for v in report["bitmaps"] + report["checkpoints"] for f in v["findings"]]
    found += [f["severity"] for f in report["findings"]]
    assert (report["ok"], report["errors"], report["warnings"]) == \
        (run.code == 0, found.count("error"), found.count("warning")), report
    names = [v["name"] for v in report["bitmaps"]]
    assert len(names) == len(set(names)), names
    return report


# ------------------------------------------------- 1. any JSON value, biased keys

json_values = any_json()


def encode(value: Any, how: str) -> bytes:
    if how == "ascii":  # as qemu and virsh print it: non-ASCII as \\u escapes
        return json.dumps(value).encode()
    # Raw UTF-8; lone surrogates become invalid byte sequences (surrogatepass).
    return json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, how=st.sampled_from(["ascii", "utf-8"]),
       extra=st.sampled_from([(), ("--top", "top-format"), ("--bitmap", "a")]))
def test_any_json_value(value: Any, how: str, extra: tuple[str, ...]) -> None:
    check_outcome(kbrules("check", "-", "--format", "json", *extra, stdin=encode(value, how)))


@settings(deadline=None)
@given(data=st.binary(max_size=64) | st.text(max_size=64).map(lambda t: t.encode("utf-8")))
def test_any_bytes(data: bytes) -> None:
    check_outcome(kbrules("check", "-", "--format", "json", stdin=data))


# ------------------------------------------- 2. well-formed qemu-img and QMP input

NAMES = (st.sampled_from(["a", "b", "c", "current", "backup-2024-01-01", "d\u00e9j\u00e0",
                          "with space", "x" * 100, "'quote'", "-dash"])
         | st.text(st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["\n", "\x1b", "\u2028"]),
                   min_size=1, max_size=6))
FLAGS = st.sampled_from([("auto",), ("auto",), ("auto",), (), ("in-use", "auto"), ("in-use",)]).map(list)
GRANULARITY = st.sampled_from([512, 65536, 2 ** 20])


@st.composite
def layer_bitmaps(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    """One layer's bitmaps: name -> state (flags, persistent, busy, granularity)."""
    names = draw(st.lists(NAMES, unique=True, max_size=4))
    return {n: {"flags": draw(FLAGS), "persistent": draw(st.booleans() | st.just(True)),
                "busy": draw(st.booleans()), "granularity": draw(GRANULARITY)} for n in names}


@st.composite
def chains(draw: st.DrawFn) -> dict[str, Any]:
    """A chain, top first: per layer its bitmaps; and whether the base names a backing
    file missing from the input."""
    depth = draw(st.integers(1, 6))
    return {"layers": [draw(layer_bitmaps()) for _ in range(depth)],
            "incomplete": draw(st.booleans() | st.just(False))}


def oracle(layers: list[dict[str, dict[str, Any]]], complete: bool,
           transient_ok: bool) -> dict[str, bool]:
    """libvirt >= 6.5 (qemuBlockBitmapChainIsValid), written again from its README."""
    verdicts = {}
    for name in {n for layer in layers for n in layer}:
        holding = [i for i, layer in enumerate(layers) if name in layer]
        run_from_top = holding == list(range(len(holding)))
        copies_ok = all("auto" in s["flags"] and "in-use" not in s["flags"]
                        and (s["persistent"] or transient_ok)
                        for layer in layers for n, s in layer.items() if n == name)
        verdicts[name] = complete and holding[0] == 0 and run_from_top and copies_ok
    return verdicts


def qemu_img_value(chain: dict[str, Any], draw: st.DrawFn) -> Any:
    layers = chain["layers"]
    out = []
    for i, bitmaps in enumerate(layers):
        below = i + 1 < len(layers) or chain["incomplete"]
        out.append(builders.layer(f"/var/lib/images/layer{i}.qcow2",
                         [bitmap(n, *s["flags"], granularity=s["granularity"]) for n, s in bitmaps.items()],
                         f"layer{i + 1}.qcow2" if below else None,
                         full_backing=f"/var/lib/images/layer{i + 1}.qcow2", children=draw(st.booleans())))
    if len(out) == 1 and draw(st.booleans()):
        return out[0]  # plain qemu-img info: one object
    return out


def qmp_disk(chain: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return builders.qmp_disk([[qmp_bitmap(n, recording="auto" in s["flags"], persistent=s["persistent"],
                                          busy=s["busy"], inconsistent="in-use" in s["flags"],
                                          granularity=s["granularity"]) for n, s in bitmaps.items()]
                              for bitmaps in chain["layers"]], prefix, incomplete=chain["incomplete"])


def check_report(run: Run, chain: dict[str, Any], transient_ok: bool) -> dict[str, Any]:
    report = check_outcome(run)
    assert report is not None, run.err
    layers = chain["layers"]
    assert len(report["chain"]) == len(layers)
    expected = oracle(layers, not chain["incomplete"], transient_ok)
    got = {v["name"]: v["valid"] for v in report["bitmaps"]}
    assert got == expected, (got, expected)
    if chain["incomplete"] and got:
        assert all(any(f["rule"] == "chain-complete" for f in v["findings"]) for v in report["bitmaps"])
    return report


@settings(deadline=None)
@given(chain=chains(), data=st.data())
def test_well_formed_qemu_img(chain: dict[str, Any], data: st.DataObject) -> None:
    value = qemu_img_value(chain, data.draw)
    run = kbrules("check", "-", "--format", "json", stdin=json.dumps(value).encode())
    report = check_report(run, chain, transient_ok=True)  # qcow2 bitmaps are persistent
    assert [l["filename"] for l in report["chain"]] == [
        f"/var/lib/images/layer{i}.qcow2" for i in range(len(chain["layers"]))]


@settings(deadline=None)
@given(chain=chains(), other=st.none() | chains(), data=st.data())
def test_well_formed_qmp(chain: dict[str, Any], other: Optional[dict[str, Any]],
                         data: st.DataObject) -> None:
    nodes = qmp_disk(chain, "vda")
    if other is not None:  # a second, independent disk in the same reply
        nodes += qmp_disk(other, "vdb")
    nodes = data.draw(st.permutations(nodes))  # QEMU's order is not the chain's
    value: Any = {"return": nodes} if data.draw(st.booleans()) else nodes
    top = ("--top", "vda-0-format") if other is not None or data.draw(st.booleans()) else ()
    run = kbrules("check", "-", "--format", "json", *top, stdin=json.dumps(value).encode())
    report = check_report(run, chain, transient_ok=False)
    assert [l["node"] for l in report["chain"]] == [
        f"vda-{i}-format" for i in range(len(chain["layers"]))]


@settings(deadline=None)
@given(chain=chains(), other=chains())
def test_two_disks_without_top_name_both(chain: dict[str, Any], other: dict[str, Any]) -> None:
    nodes = qmp_disk(chain, "vda") + qmp_disk(other, "vdb")
    run = kbrules("check", "-", "--format", "json", stdin=json.dumps(nodes).encode())
    assert check_outcome(run) is None
    assert "vda-0-format (/var/lib/images/vda0.qcow2)" in run.err
    assert "vdb-0-format (/var/lib/images/vdb0.qcow2)" in run.err


@settings(deadline=None)
@given(chain=chains(), names=st.lists(NAMES | st.text(min_size=1, max_size=10), min_size=1,
                                      max_size=3))
def test_requested_bitmaps_are_reported_in_order(chain: dict[str, Any], names: list[str]) -> None:
    """--bitmap NAME: exactly the names asked for, in the order asked, present or not."""
    value = qmp_disk(chain, "vda")
    argv = [f"--bitmap={n}" for n in names]  # = : a name may start with '-'
    run = kbrules("check", "-", "--format", "json", *argv, stdin=json.dumps(value).encode())
    report = check_outcome(run)
    assert report is not None, run.err
    assert [v["name"] for v in report["bitmaps"]] == list(dict.fromkeys(names))
    expected = oracle(chain["layers"], not chain["incomplete"], transient_ok=False)
    for v in report["bitmaps"]:
        assert v["valid"] is expected.get(v["name"], False), (v, expected)


# ------------------------------------- 3. well-formed input, broken in one place


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain=chains(), qmp=st.booleans(), data=st.data())
def test_well_formed_broken_in_one_place(chain: dict[str, Any], qmp: bool, data: st.DataObject) -> None:
    """Real-looking input with one value replaced by any JSON value, or one key or item
    deleted: a report or one line, as always. Finds what random JSON rarely reaches."""
    value: Any = qmp_disk(chain, "vda") if qmp else qemu_img_value(chain, data.draw)
    if qmp and data.draw(st.booleans()):
        value = {"return": value}
    value = broken(data.draw, value)
    how = data.draw(st.sampled_from(["ascii", "utf-8"]))
    check_outcome(kbrules("check", "-", "--format", "json", stdin=encode(value, how)))
