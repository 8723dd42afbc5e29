"""The jq backend is the checker: on every input the tests can make, the Python engine,
the jq binding (libjq), jq 1.6 (/usr/bin/jq) and gojq give equal reports."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence

import jq as libjq
import pytest
from hypothesis import HealthCheck, given, settings

from engine import jqbackend
from engine.evaluate import evaluate
from engine.normalize import normalize
from engine.report import to_dict
from engine.loader import load_rules
from helpers import FIXTURES, LIBVIRT, kbrules, make_chain
from jqcases import case

ROOT = Path(__file__).resolve().parents[1]
RULES = load_rules()
PROGRAM = jqbackend.compile_program(RULES)
BINDING = jqbackend.binding(RULES)
CLIS = [c for c in ("jq", "gojq") if shutil.which(c)]

Case = tuple[Any, Optional[Sequence[str]], Optional[str]]


def python_report(value: Any, names: Optional[Sequence[str]], top: Optional[str]) -> Any:
    return to_dict(evaluate(normalize(value, "input", top), RULES, names))


def cli_argv(cli: str, program: Path, inputs: Path, names: Optional[Sequence[str]],
             top: Optional[str]) -> list[str]:
    # The documented form: jq -f PROGRAM INPUT [--arg top NODE] [--args -- NAME...]
    # ('--' keeps a name that starts with '-' from being read as an option).
    # (gojq 0.12 reads a name after --args as a file unless INPUT is given.)
    return ([cli, "-c", "-f", str(program), str(inputs)] + (["--arg", "top", top] if top else [])
            + (["--args", "--", *names] if names else []))


def run_cli(cli: str, program: Path, cases: Sequence[Case]) -> list[Any]:
    """One jq process for many inputs with the same arguments (jq 1.6 compiles slowly)."""
    _, names, top = cases[0]
    inputs = program.parent / "inputs.json"
    inputs.write_text("\n".join(json.dumps(v) for v, _, _ in cases))
    done = subprocess.run(cli_argv(cli, program, inputs, names, top), capture_output=True, text=True)
    assert done.returncode == 0, f"{cli}: {done.stderr}"
    # Not splitlines(): names may hold U+2028 and other breaks that jq -c writes raw.
    return [json.loads(line) for line in done.stdout.split("\n") if line]


def assert_all_agree(cases: Sequence[Case], program: Path) -> None:
    expected = [python_report(*c) for c in cases]
    for c, want in zip(cases, expected):
        got = jqbackend.run(BINDING, c[0], c[1], c[2])
        assert got == want, f"libjq differs\ninput: {json.dumps(c)}\npython: {want}\nlibjq: {got}"
    groups: dict[str, list[int]] = {}
    for i, (_, names, top) in enumerate(cases):
        groups.setdefault(json.dumps([names, top]), []).append(i)
    for cli in CLIS:
        for indices in groups.values():
            outputs = run_cli(cli, program, [cases[i] for i in indices])
            for i, got in zip(indices, outputs):
                assert got == expected[i], (f"{cli} differs\ninput: {json.dumps(cases[i])}\n"
                                            f"python: {expected[i]}\n{cli}: {got}")


@pytest.fixture(scope="module")
def program_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jq") / "rules.jq"
    path.write_text(PROGRAM)
    return path


def test_jq_clis_are_installed() -> None:
    # CI installs both; a missing one would silently shrink the differential tests.
    assert CLIS == ["jq", "gojq"]


def _fixture_cases() -> list[Case]:
    files = sorted(LIBVIRT.glob("*.json")) + sorted(FIXTURES.glob("*.json")) + \
        sorted((ROOT / "docs" / "examples").glob("*.json"))
    cases: list[Case] = []
    for f in files:
        value = json.loads(f.read_text())
        try:
            normalize(value, f.name)
        except Exception:  # several disks: one case per top node
            nodes = value["return"] if isinstance(value, dict) else value
            tops = [n["node-name"] for n in nodes if n.get("node-name", "").endswith("format")]
            cases += [(value, None, t) for t in tops if _has_top(value, t)]
            continue
        cases.append((value, None, None))
        cases.append((value, ["a", "current", "missing", "x"], None))
    for rule in RULES:
        cases += [(e.input, list(e.bitmaps) or None, None) for e in rule.examples]
    return cases


def _has_top(value: Any, top: str) -> bool:
    try:
        normalize(value, "x", top)
        return True
    except Exception:
        return False


def test_fixtures_and_examples_agree(program_file: Path) -> None:
    cases = _fixture_cases()
    assert len(cases) >= 20
    assert_all_agree(cases, program_file)


@pytest.mark.slow
def test_generated_chains_agree(program_file: Path) -> None:
    collected: list[Case] = []

    # Ten times the profile's count: the jq executables then run on a few hundred.
    @settings(max_examples=10 * settings.default.max_examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(case())
    def python_and_libjq(c: Case) -> None:
        want = python_report(*c)
        got = jqbackend.run(BINDING, *c)
        assert got == want, f"input: {json.dumps(c)}\npython: {want}\nlibjq: {got}"
        collected.append(c)

    python_and_libjq()
    assert len(collected) >= 10 * settings.default.max_examples
    # The jq executables on the same chains: all of those checking every bitmap in one
    # run each, and a sample of those with names or a top node (a process each).
    plain = [c for c in collected if c[1] is None and c[2] is None]
    # A command line cannot carry a NUL byte, so such requested names stay in-process.
    other = [c for c in collected if (c[1] is not None and not any("\0" in n for n in c[1]))
             or (c[1] is None and c[2] is not None)][:60]
    assert len(plain) >= len(collected) // 5
    assert_all_agree(plain + other, program_file)


@pytest.mark.parametrize("yaml_file", sorted((ROOT / "rules").glob("*.yaml")), ids=lambda p: p.name)
def test_committed_filter_is_fresh(yaml_file: Path) -> None:
    committed = yaml_file.with_suffix(".jq")
    assert committed.exists(), f"{committed} is missing: run kbrules jq --rules {yaml_file} > {committed}"
    assert committed.read_text() == jqbackend.committed_program(load_rules([yaml_file]), yaml_file.stem), (
        f"{committed} is stale: regenerate it with kbrules jq --rules rules/{yaml_file.name}")


@pytest.mark.parametrize("cli", CLIS)
def test_committed_filter_runs_as_documented(cli: str) -> None:
    # The header's own first usage line, run as a shell user would.
    committed = ROOT / "rules" / "incremental-backup.jq"
    example = ROOT / "docs" / "examples" / "broken-chain.json"
    done = subprocess.run([cli, "-f", str(committed), str(example), "--args", "daily", "old"],
                          capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert [(b["name"], b["valid"]) for b in report["bitmaps"]] == [("daily", True), ("old", False)]
    run = kbrules("check", str(example), "--format", "json", "--bitmap", "daily", "--bitmap", "old",
                  "--rules", str(ROOT / "rules" / "incremental-backup.yaml"))
    assert report == run.json()


def test_kbrules_jq_is_the_program_for_all_rules(tmp_path: Path) -> None:
    run = kbrules("jq")
    assert run.code == 0 and run.err == ""
    assert run.out == PROGRAM.rstrip("\n") + "\n"
    # The contract, as a shell user runs it: jq -f <(kbrules jq) X --args NAME...
    program = tmp_path / "all.jq"
    program.write_text(run.out)
    example = ROOT / "docs" / "examples" / "broken-chain.json"
    for cli in CLIS:
        done = subprocess.run([cli, "-f", str(program), str(example), "--args", "weekly", "weekly", "nope"],
                              capture_output=True, text=True, check=True)
        assert json.loads(done.stdout) == kbrules("check", "--format", "json", "--bitmap", "weekly",
                                                  "--bitmap", "nope", str(example)).json()


def test_kbrules_jq_narrows_by_select_or_file() -> None:
    one = kbrules("jq", "--select", "bitmap-recording", "--select", "bitmap-in-top")
    assert one.code == 0
    value = json.loads((ROOT / "docs" / "examples" / "broken-chain.json").read_text())
    report = libjq.compile(one.out, args={"ARGS": {"positional": [], "named": {}}}).input_value(value).first()
    assert report["rules"] == ["bitmap-in-top", "bitmap-recording"]  # in file order
    assert {f["rule"] for b in report["bitmaps"] for f in b["findings"]} == {"bitmap-recording", "bitmap-in-top"}
    by_file = kbrules("jq", "--rules", str(ROOT / "rules" / "incremental-backup.yaml"))
    assert by_file.out == (ROOT / "rules" / "incremental-backup.jq").read_text()
    bad = kbrules("jq", "--select", "no-such-rule")
    assert bad.code == 2 and bad.out == "" and "--select: unknown rule id 'no-such-rule'" in bad.err


@pytest.mark.parametrize("value, names, top", _fixture_cases()[:40])
def test_check_engine_jq_gives_the_same_report(value: Any, names: Any, top: Any, tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(value))
    args = ["check", str(path), "--format", "json"] + [f"--bitmap={n}" for n in names or []] + \
        (["--top", top] if top else [])
    by_python, by_jq = kbrules(*args), kbrules(*args, "--engine", "jq")
    assert (by_jq.code, by_jq.json()) == (by_python.code, by_python.json())


def test_check_engine_jq_on_an_image_and_its_limits(tmp_path: Path) -> None:
    top = make_chain(tmp_path, [{"a": "ok", "b": "disabled"}, {"a": "ok"}])[0]
    by_jq = kbrules("check", str(top), "--format", "json", "--engine", "jq")
    assert by_jq.code == 1
    assert by_jq.json() == kbrules("check", str(top), "--format", "json").json()
    for extra, needle in ((["--format", "text"], "add --format json"),
                          (["--format", "json", "--force-share"], "needs the Python engine")):
        run = kbrules("check", str(top), "--engine", "jq", *extra)
        assert run.code == 2 and run.out == "" and needle in run.err
