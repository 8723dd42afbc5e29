"""The jq program is the checker: on every input the tests can make, the Python engine,
the jq binding (libjq), jq 1.6 (/usr/bin/jq) and gojq give equal reports; on every bad
input, they refuse it with the same line and exit status 2."""

from __future__ import annotations

import dataclasses
import json
import shutil
import unicodedata
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

import jq as libjq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import badinputs as bad
from engine import jqbackend
from engine.errors import InputError
from engine.evaluate import evaluate
from engine.examples import check_example
from engine.normalize import LOOK_ALIKES, normalize
from engine.report import to_dict
from engine.loader import load_rules
from engine.text import show
from helpers import FIXTURES, LIBVIRT, Run, info_text, kbrules, make_chain
from jqcases import any_json, broken, case

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "rules"
RULES = load_rules()
PROGRAM = jqbackend.compile_program(RULES)
BINDING = jqbackend.binding(RULES)
CLIS = [c for c in ("jq", "gojq") if shutil.which(c)]
EXAMPLE = ROOT / "docs" / "examples" / "broken-chain.json"

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


def test_check_engine_jq_names_a_bad_file_as_check_does(tmp_path: Path) -> None:
    """jq refuses (the CLI passes the input's name): the line of the Python engine."""
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(bad.qemu_img_deep(bad.QEMU_IMG_DEEP[0][1])))
    by_python, by_jq = kbrules("check", str(path)), kbrules("check", str(path), "--engine", "jq", "--format", "json")
    assert by_jq.err.startswith(f"kbrules: {path}: [1].format-specific.data.bitmaps: ")
    assert (by_jq.code, by_jq.out, by_jq.err) == (2, "", by_python.err)


# ------------------------------------------------------------ the fast path

FAST_AND_CAREFUL = libjq.compile(jqbackend.module([]) + "\n[(try kb_fast(null) catch null), kb_careful(null; null)]")


def test_the_fast_path_takes_real_qemu_img_output_and_gives_the_careful_chain(tmp_path: Path) -> None:
    """qemu-img --backing-chain output takes the fast path, to the same chain as the
    careful one (else the program would be correct, and slow)."""
    top = make_chain(tmp_path, [{"a": "ok", "b": "disabled"}, {"a": "in-use"}, {}],
                     formats=["qcow2", "qcow2", "qcow2-v2"])[0]
    values = [json.loads(info_text(top))] + [c[0] for c in _fixture_cases()
                                             if isinstance(c[0], list) and "filename" in c[0][0]]
    for value in values:
        fast, careful = FAST_AND_CAREFUL.input_value(value).first()
        assert fast is not None, json.dumps(value)[:300]
        assert fast == careful


# ------------------------------------------------------------ committed programs

def test_committed_programs_are_fresh() -> None:
    for name, text in ((jqbackend.PROGRAM_FILE, jqbackend.program_file(RULES)),
                       (jqbackend.MODULE_FILE, jqbackend.module_file(RULES))):
        assert (RULES_DIR / name).read_text() == text, (
            f"rules/{name} is stale: regenerate it with kbrules jq{' --module' if 'kbrules' in name else ''}"
            f" > rules/{name}")


def test_kbrules_jq_prints_the_committed_programs() -> None:
    for argv, name in ((["jq"], jqbackend.PROGRAM_FILE), (["jq", "--module"], jqbackend.MODULE_FILE)):
        run = kbrules(*argv)
        assert run.code == 0 and run.err == ""
        assert run.out == (RULES_DIR / name).read_text().rstrip("\n") + "\n"


@pytest.mark.parametrize("cli", CLIS)
def test_check_jq_is_kbrules_check_as_documented(cli: str) -> None:
    """The header's usage, as a shell user runs it: the report of kbrules check (all
    the shipped rules), with -f and with -n."""
    program = RULES_DIR / jqbackend.PROGRAM_FILE
    want = kbrules("check", "--format", "json", "--bitmap", "daily", "--bitmap", "old", str(EXAMPLE))
    for n in ([], ["-n"]):
        done = subprocess.run([cli, *n, "-f", str(program), str(EXAMPLE), "--args", "daily", "old"],
                              capture_output=True, text=True, check=True)
        assert json.loads(done.stdout) == want.json()
    assert want.json()["ok"] is False and want.code == 1
    # The gate: jq -e .ok exits as check does (0 only when check exits 0).
    for names, code in ((["daily"], 0), (["old"], 1)):
        report = subprocess.run([cli, "-f", str(program), str(EXAMPLE), "--args", *names],
                                capture_output=True, check=True).stdout
        gate = subprocess.run([cli, "-e", ".ok"], input=report, capture_output=True)
        assert gate.returncode == code == kbrules("check", *[f"--bitmap={n}" for n in names], str(EXAMPLE)).code


def test_chain_level_error_makes_ok_false() -> None:
    """The issue's case: a corrupt base layer (chain-level error) once passed the
    documented gate, all(.bitmaps[]; .valid)."""
    value = json.loads(EXAMPLE.read_text())
    value[-1]["format-specific"]["data"]["corrupt"] = True
    report = jqbackend.run(BINDING, value, ["daily"])
    assert all(b["valid"] for b in report["bitmaps"])
    assert report["ok"] is False and report["errors"] == 1
    assert report == python_report(value, ["daily"], None)


def test_kbrules_jq_narrows_by_select_or_file() -> None:
    one = kbrules("jq", "--select", "bitmap-recording", "--select", "bitmap-in-top")
    assert one.code == 0
    value = json.loads(EXAMPLE.read_text())
    program = libjq.compile(one.out.replace("\nkbrules_main($ARGS)", "\nkbrules_report"))
    report = program.input_value(value).first()
    assert report["rules"] == ["bitmap-in-top", "bitmap-recording"]  # in file order
    assert {f["rule"] for b in report["bitmaps"] for f in b["findings"]} == {"bitmap-recording", "bitmap-in-top"}
    by_file = kbrules("jq", "--rules", str(RULES_DIR / "image-health.yaml"))
    assert "# check.jq: GENERATED by `kbrules jq` from image-health.yaml." in by_file.out
    program = libjq.compile(by_file.out.replace("\nkbrules_main($ARGS)", "\nkbrules_report"))
    assert program.input_value(value).first()["rules"] == [
        r.id for r in load_rules([RULES_DIR / "image-health.yaml"])]
    bad_id = kbrules("jq", "--select", "no-such-rule")
    assert bad_id.code == 2 and bad_id.out == "" and "--select: unknown rule id 'no-such-rule'" in bad_id.err


# ------------------------------------------------------------ the module

def test_module_has_only_definitions() -> None:
    """jq 1.6 refuses a library with a main expression; the program is the module and
    one line."""
    module = (RULES_DIR / jqbackend.MODULE_FILE).read_text()
    program = (RULES_DIR / jqbackend.PROGRAM_FILE).read_text()
    assert program.split("\n#\n# Rules:")[1] == module.split("\n#\n# Rules:")[1] + jqbackend.ENTRY_CLI


@pytest.mark.parametrize("form", ['include "kbrules"; kbrules_report', 'import "kbrules" as kb; kb::kbrules_report',
                                  'include "kbrules"; kbrules_report($ARGS)'])
def test_module_in_every_jq(form: str, tmp_path: Path) -> None:
    """include and import, in jq 1.6, gojq (-L rules) and libjq 1.8 ({search: DIR}: the
    binding takes no -L)."""
    want = kbrules("check", "--format", "json", str(EXAMPLE)).json()
    for cli in CLIS:
        done = subprocess.run([cli, "-L", str(RULES_DIR), form, str(EXAMPLE)], capture_output=True, text=True)
        assert done.returncode == 0 and json.loads(done.stdout) == want, (cli, done.stderr)
    # Metadata goes after the name (include) or after `as NAME` (import).
    where = f' {{search: {json.dumps(str(RULES_DIR))}}};'
    search = form.replace("$ARGS", "{}").replace(";", where, 1)
    assert libjq.compile(search).input_value(json.loads(EXAMPLE.read_text())).first() == want


@pytest.mark.parametrize("cli", CLIS)
def test_module_report_args_and_refusal(cli: str) -> None:
    names = kbrules("check", "--format", "json", "--bitmap", "old", str(EXAMPLE)).json()
    done = subprocess.run([cli, "-L", str(RULES_DIR), 'include "kbrules"; kbrules_report($ARGS) | .ok, .bitmaps[].name',
                           str(EXAMPLE), "--args", "old"], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["false", '"old"'] and names["ok"] is False
    refused = subprocess.run([cli, "-L", str(RULES_DIR), 'include "kbrules"; kbrules_report'],
                             input='{"foo": 1}', capture_output=True, text=True)
    python = kbrules("check", "-", stdin=b'{"foo": 1}')
    assert (refused.returncode, refused.stdout, refused.stderr) == (2, "", python.err)


def test_module_entries_are_check_jsonl(tmp_path: Path) -> None:
    """kbrules_entry over many inputs in one jq run: the lines of kbrules check --format
    jsonl, bad inputs included, and the run goes on after them."""
    files = []
    for i, b in enumerate([c for c in bad.every_bad_json() if c.top is None]):
        files.append(tmp_path / f"bad{i}.json")
        files[-1].write_text(json.dumps(b.value) + "\n")  # jq reads files as one stream
    for i, (value, names, top) in enumerate(_fixture_cases()[:12:2]):
        if names is None and top is None:
            files.append(tmp_path / f"good{i}.json")
            files[-1].write_text(json.dumps(value) + "\n")
    python = kbrules("check", "--format", "jsonl", *map(str, files))
    want = [json.loads(line) for line in python.out.splitlines()]
    assert len(want) == len(files) and any("error" in w for w in want) and any("ok" in w for w in want)
    for cli in CLIS:
        done = subprocess.run([cli, "-n", "-c", "-L", str(RULES_DIR), 'include "kbrules"; inputs | kbrules_entry',
                               *map(str, files)], capture_output=True, text=True, check=True)
        assert [json.loads(line) for line in done.stdout.split("\n") if line] == want, cli


# ------------------------------------------------------------ refusals

BAD = bad.every_bad_json()


def python_refusal(value: Any, top: Optional[str] = None) -> Run:
    """What kbrules check prints for this value on standard input: one line, exit 2."""
    run = kbrules("check", "-", *(["--top", top] if top is not None else []), stdin=json.dumps(value).encode())
    assert run.code == 2 and run.out == "" and run.err.count("\n") == 1, run
    return run


@pytest.mark.parametrize("case", BAD, ids=[b.id for b in BAD])
def test_libjq_refuses_as_check_does(case: bad.Bad) -> None:
    """Through the binding (and kbrules check --engine jq, which lets jq refuse): the
    line of kbrules check, word for word."""
    want = python_refusal(case.value, case.top)
    with pytest.raises(InputError) as refused:
        jqbackend.run(BINDING, case.value, None, case.top, where="<stdin>")
    assert f"kbrules: {show(str(refused.value))}\n" == want.err
    top = ["--top", case.top] if case.top is not None else []
    run = kbrules("check", "-", "--engine", "jq", "--format", "json", *top, stdin=json.dumps(case.value).encode())
    assert (run.code, run.out, run.err) == (2, "", want.err)


def _refusals(cli: str, argv: list[str], cases: Sequence[bad.Bad]) -> list[str]:
    """Each case through `cli argv... < value`: what differs from check's refusal."""
    wants = [(2, "", python_refusal(c.value, c.top).err) for c in cases]  # in-process: not in threads

    def one(case: bad.Bad, want: tuple[int, str, str]) -> Optional[str]:
        top = ["--arg", "top", case.top] if case.top is not None else []
        done = subprocess.run([cli, *argv, *top], input=json.dumps(case.value).encode(), capture_output=True)
        got = (done.returncode, done.stdout.decode(), done.stderr.decode())
        return None if got == want else f"{case.id}: {cli} gives {got}, check {want}"
    with ThreadPoolExecutor(max_workers=4) as pool:
        return [d for d in pool.map(one, cases, wants) if d]


@pytest.mark.slow
@pytest.mark.parametrize("cli", CLIS)
def test_jq_refuses_as_check_does(cli: str) -> None:
    """Every bad JSON input, as jq -f check.jq and jq -n -f check.jq: check's own line
    on stderr, nothing on stdout, exit status 2 (a jq process each: jq 1.6 takes 20 s)."""
    program = str(RULES_DIR / jqbackend.PROGRAM_FILE)
    assert _refusals(cli, ["-f", program], BAD) == []
    assert _refusals(cli, ["-n", "-f", program], BAD[::2]) == []


@pytest.mark.parametrize("cli", CLIS)
def test_jq_refuses_as_check_does_sample(cli: str) -> None:
    """The quick loop's share of the test above (test_module_entries_are_check_jsonl
    holds every message in one run)."""
    program = str(RULES_DIR / jqbackend.PROGRAM_FILE)
    assert _refusals(cli, ["-f", program], BAD[::9]) == []
    assert _refusals(cli, ["-n", "-f", program], BAD[4::9]) == []


@pytest.mark.parametrize("command", ["check", "measure", "map"])
def test_other_qemu_img_commands_are_refused_alike(command: str, tmp_path: Path) -> None:
    data = bad.other_commands(tmp_path)[command]
    case = bad.Bad(command, json.loads(data))
    with pytest.raises(InputError) as refused:
        jqbackend.run(BINDING, case.value, where="<stdin>")
    assert f"kbrules: {show(str(refused.value))}\n" == python_refusal(case.value).err
    for cli in CLIS:
        assert _refusals(cli, ["-f", str(RULES_DIR / jqbackend.PROGRAM_FILE)], [case]) == []


def _is_pystr_exact(value: Any) -> bool:
    """Whether a QMP error reply in the value holds only what kb_pystr words as
    Python's str() does (strings, null, booleans, integers)."""
    if isinstance(value, dict):
        error = value.get("error")
        if isinstance(error, dict) and any(not isinstance(error.get(k), (str, int, type(None)))
                                           for k in ("class", "desc")):
            return False
        return all(_is_pystr_exact(v) for v in value.values())
    return all(_is_pystr_exact(v) for v in value) if isinstance(value, list) else True


def outcome_python(value: Any, names: Optional[list[str]], top: Optional[str]) -> Any:
    try:
        return to_dict(evaluate(normalize(value, "<stdin>", top), RULES, names))
    except InputError as e:
        return f"kbrules: {show(str(e))}"


def outcome_libjq(value: Any, names: Optional[list[str]], top: Optional[str]) -> Any:
    try:
        return jqbackend.run(BINDING, value, names, top, where="<stdin>")
    except InputError as e:
        return f"kbrules: {show(str(e))}"


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(value=any_json(jq_safe=True), extra=st.sampled_from([(None, None), (None, "top-format"), (["a"], None)]))
def test_any_json_value_same_outcome(value: Any, extra: tuple[Optional[list[str]], Optional[str]]) -> None:
    """Any JSON value at all: the same report, or the same refusal, in Python and libjq."""
    assume(_is_pystr_exact(value))
    names, top = extra
    assert outcome_libjq(value, names, top) == outcome_python(value, names, top), json.dumps(value)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(c=case(), data=st.data())
def test_broken_in_one_place_same_outcome(c: Case, data: st.DataObject) -> None:
    """A generated chain (qemu-img or QMP) with one place broken: the same report, or
    the same refusal, in Python and libjq."""
    value, names, top = c
    value = broken(data.draw, value, jq_safe=True)
    assume(_is_pystr_exact(value))
    names = list(names) if names else None
    assert outcome_libjq(value, names, top) == outcome_python(value, names, top), json.dumps([value, names, top])


@pytest.mark.slow
def test_broken_inputs_agree_in_every_jq(tmp_path: Path) -> None:
    """Broken chains through jq 1.6 and gojq too, many to a process: kbrules_entry
    gives each report, or each refusal without stopping the run."""
    collected: list[Case] = []

    @settings(max_examples=5 * settings.default.max_examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(c=case(), data=st.data())
    def draw(c: Case, data: st.DataObject) -> None:
        value = broken(data.draw, c[0], jq_safe=True)
        names = [n for n in c[1] or () if "\0" not in n] or None  # no NUL on a command line
        if _is_pystr_exact(value):
            collected.append((value, names, c[2]))

    draw()
    groups: dict[str, list[Case]] = {}
    for c in collected:
        groups.setdefault(json.dumps([c[1], c[2]]), []).append(c)
    stream = tmp_path / "inputs.json"
    checked = refused = 0
    for cases in groups.values():
        if len(cases) < 3:
            continue
        _, names, top = cases[0]
        stream.write_text("".join(json.dumps(v) + "\n" for v, _, _ in cases))
        want = []
        for value, _, _ in cases:
            try:
                want.append({"input": str(stream), **to_dict(evaluate(normalize(value, str(stream), top), RULES, names))})
            except InputError as e:
                want.append({"input": str(stream), "error": show(str(e))})
        for cli in CLIS:
            argv = [cli, "-n", "-c", "-L", str(RULES_DIR), 'include "kbrules"; inputs | kbrules_entry($ARGS)',
                    str(stream), *(["--arg", "top", top] if top else []), *(["--args", "--", *names] if names else [])]
            done = subprocess.run(argv, capture_output=True, text=True, check=True)
            got = [json.loads(line) for line in done.stdout.split("\n") if line]
            for w, g, c in zip(want, got, cases):
                assert g == w, f"{cli} differs\ninput: {json.dumps(c)}\npython: {w}\n{cli}: {g}"
            assert len(got) == len(want)
        checked += len(cases)
        refused += sum("error" in w for w in want)
    assert checked >= len(collected) // 2 and 0 < refused < checked


def test_a_rule_example_with_bad_input_is_rejected_alike() -> None:
    """kbrules test: an example whose input check refuses says so in both engines, in
    the same words."""
    rule = RULES[0]
    example = dataclasses.replace(rule.examples[0], input={"filename": "x.qcow2"})
    said = [check_example(rule, example, 1, engine) for engine in ("python", "jq")]
    assert said[0] is not None and "input rejected: " in said[0] and "missing 'format'" in said[0]
    assert said[0] == said[1]


def test_look_alike_keys_are_those_of_normalize() -> None:
    """jqbackend's keys of each look-alike say what normalize.LOOK_ALIKES' tests say."""
    assert len(jqbackend.LOOK_ALIKE_KEYS) == len(LOOK_ALIKES)
    for keys, (what, test) in zip(jqbackend.LOOK_ALIKE_KEYS, LOOK_ALIKES):
        assert test({k: 1 for k in keys}), what
        for k in keys:
            assert not test({other: 1 for other in keys if other != k}), (what, k)


REPR_AND_SHOW = libjq.compile(jqbackend.module([]) + "\nmap([kb_repr, kb_show])")


def test_names_are_quoted_as_python_quotes_them() -> None:
    """kb_repr is Python's repr() and kb_show is engine.text.show, on every assigned
    code point up to U+FFFF and the planes' format and private-use characters: the
    messages quote names with them. (Unassigned code points are left out: repr()
    escapes them by its own Unicode version.)"""
    points = [c for c in range(1, 0x10000) if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"]
    points += [c for lo, hi in jqbackend.NOT_PRINTABLE + jqbackend.HIDDEN if lo > 0xFFFF for c in (lo, hi)
               if unicodedata.category(chr(c)) != "Cn"] + [0x1F600]
    texts = ["".join(chr(c) for c in points[i:i + 64]) for i in range(0, len(points), 64)]
    texts += ["it's", 'say "x"', "it's \"both\"", "a\\b", "", "tab\there"]
    got = REPR_AND_SHOW.input_value(texts).first()
    assert [r for r, _ in got] == [repr(t) for t in texts]
    assert [v for _, v in got] == [show(t) for t in texts]


# ------------------------------------------------------------ not JSON at all

# What jq does with input that is not JSON: under jq -n the program reads it itself and
# refuses it as check does (exit 2, one line; the words in parentheses are jq's, not
# Python's). What jq reads before any program runs cannot be seen: invalid UTF-8 and
# lone surrogate escapes become U+FFFD, a 5000-digit integer a double (check refuses
# them); gojq refuses a UTF-8 byte order mark (check and jq 1.6 skip it).
NOT_JSON: list[tuple[str, bytes, str]] = [
    ("empty", b"", "empty input"), ("whitespace", b"  \n\t\n ", "empty input"),
    ("word", b"hello", "not JSON"), ("yaml", b"filename: top.qcow2\n", "not JSON"),
    ("python-dict", b"{'a': 1}", "not JSON"), ("double-comma", b"[1, 2,, 3]", "not JSON"),
    ("trailing-garbage", b'{"filename": "a", "format": "qcow2"} trailing', "not JSON"),
    ("two-values", b'[1] [2]', "not JSON"), ("truncated", b'[{"filename": "a", "format": "qcow2", ', "truncated JSON"),
    ("utf-16-bom", '[{"filename": "a", "format": "raw"}]'.encode("utf-16"), "not JSON"),
    ("open-arrays", b"[" * 1000, "JSON"),
    # jq 1.6 parses 256 levels at most, Python and gojq more: any one line will do.
    ("deep", b"[" * 300 + b"]" * 300, ""),
]


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize("name, data, says", NOT_JSON, ids=[c[0] for c in NOT_JSON])
def test_not_json_under_n(cli: str, name: str, data: bytes, says: str) -> None:
    python = kbrules("check", "-", stdin=data)
    assert python.code == 2
    done = subprocess.run([cli, "-n", "-f", str(RULES_DIR / jqbackend.PROGRAM_FILE)], input=data, capture_output=True)
    err = done.stderr.decode()
    assert (done.returncode, done.stdout) == (2, b""), (done.returncode, done.stdout, err)
    assert err.startswith("kbrules: <stdin>: ") and err.count("\n") == 1 and says in err, err
    if says == "empty input":
        assert err == python.err  # word for word


@pytest.mark.parametrize("cli", CLIS)
def test_what_jq_reads_before_the_program(cli: str) -> None:
    """The documented differences (docs/jq.rst), as they are: input check refuses that
    jq reads as something else. They are jq's own, version by version: documented for
    jq 1.6 and gojq 0.12."""
    version = subprocess.run([cli, "--version"], capture_output=True, text=True).stdout
    if not version.startswith(("jq-1.6", "gojq 0.12")):
        pytest.skip(f"documented for jq 1.6 and gojq 0.12, not {version.strip()}")
    program = str(RULES_DIR / jqbackend.PROGRAM_FILE)
    chain = json.dumps(bad.chain())
    for data in (chain.replace('"name": "b"', '"name": "b\\udc80"').encode(),
                 chain.replace('"virtual-size": 1048576', '"virtual-size": ' + "9" * 5000).encode(),
                 chain.replace('"top.qcow2"', '"t\xe9p.qcow2"').encode("latin-1")):
        assert kbrules("check", "-", stdin=data).code == 2
        done = subprocess.run([cli, "-f", program], input=data, capture_output=True)
        assert done.returncode == 0 and json.loads(done.stdout)["ok"] is True
    bom = b"\xef\xbb\xbf" + chain.encode()
    assert kbrules("check", "-", stdin=bom).code == 0
    done = subprocess.run([cli, "-n", "-f", program], input=bom, capture_output=True)
    assert done.returncode == (0 if cli == "jq" else 2)
