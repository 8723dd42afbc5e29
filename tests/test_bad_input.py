"""Bad input and bad command lines: exit 2, one line on stderr naming what is wrong and
where, nothing on stdout (never a report), and never a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import badinputs as bad
from engine import __version__
from engine.cli import main
from engine.loader import load_rules
from badinputs import chain, qmp_nodes
from helpers import Run, assert_one_line_error, kbrules, make_chain, qemu_img

# ---------------------------------------------------------------------------- helpers

RULES = load_rules()





VIAS = ["stdin", "file.json", "file"]


def run_input(via: str, data: bytes, tmp_path: Path, *extra: str) -> tuple[Run, str]:
    """kbrules check on `data` given as stdin, a .json file, or a file without suffix
    read as JSON because --json says so. Returns the run and the input's name in messages."""
    if via == "stdin":
        return kbrules("check", "-", *extra, stdin=data), "<stdin>"
    path = tmp_path / ("input.json" if via == "file.json" else "input")
    path.write_bytes(data)
    return kbrules("check", *(["--json"] if via == "file" else []), str(path), *extra), str(path)


def run_value(via: str, value: Any, tmp_path: Path, *extra: str) -> tuple[Run, str]:
    return run_input(via, json.dumps(value).encode(), tmp_path, *extra)


# ------------------------------------------------------------------ empty, not JSON


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("data", [b"", b"   \n\t\n  "], ids=["empty", "whitespace"])
def test_empty_input(via: str, data: bytes, tmp_path: Path) -> None:
    run, where = run_input(via, data, tmp_path)
    assert_one_line_error(run, where, "empty input")


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("data", [b"hello", b"filename: top.qcow2\n", b"{'a': 1}",
                                  b'{"filename": "a", "format": "qcow2"} trailing',
                                  b"[1, 2,, 3]"],
                         ids=["word", "yaml", "python-dict", "trailing-garbage", "double-comma"])
def test_not_json(via: str, data: bytes, tmp_path: Path) -> None:
    run, where = run_input(via, data, tmp_path)
    assert_one_line_error(run, where, "not JSON", "line 1 column")


@pytest.fixture(scope="module")
def real_info(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """qemu-img info --output=json --backing-chain of a real 3-layer chain, as bytes."""
    d = tmp_path_factory.mktemp("real")
    top = make_chain(d, [{"a": "ok", "b": "ok"}, {"a": "ok"}, {"a": "disabled"}])[0]
    return qemu_img("info", "--output=json", "--backing-chain", top.name, cwd=d).encode()


@pytest.mark.parametrize("via", VIAS)
def test_truncated_json_cut_in_half(via: str, real_info: bytes, tmp_path: Path) -> None:
    run, where = run_input(via, real_info[: len(real_info) // 2], tmp_path)
    assert_one_line_error(run, where, "truncated JSON")


def test_truncated_json_at_every_byte(real_info: bytes) -> None:
    """Wherever the cut falls (inside a string, a number, a literal, between tokens),
    it is called truncated, never 'not JSON' or worse."""
    whole = real_info.rstrip()
    for n in range(1, len(whole)):
        run = kbrules("check", "-", stdin=whole[:n])
        assert_one_line_error(run, "<stdin>", "truncated JSON")


def test_the_real_output_itself_is_fine(real_info: bytes) -> None:
    assert kbrules("check", "-", stdin=real_info).code == 1  # 'a' is disabled in the base


# ---------------------------------------------------------------- JSON, wrong shape
# The bad JSON values are in badinputs.py: tests/test_jq.py holds the jq program to
# the same lines.


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("value, needles", [c[1:] for c in bad.OTHER_SHAPES], ids=[c[0] for c in bad.OTHER_SHAPES])
def test_json_of_another_shape(via: str, value: Any, needles: list[str], tmp_path: Path) -> None:
    run, where = run_value(via, value, tmp_path)
    assert_one_line_error(run, where, *needles)


@pytest.mark.parametrize("via", VIAS)
def test_qmp_nodes_mixed_with_other_objects(via: str, tmp_path: Path) -> None:
    run, where = run_value(via, bad.qmp_nodes_mixed_with_other_objects(), tmp_path)
    assert_one_line_error(run, where, "[1]", "no 'node-name'")


@pytest.mark.parametrize("via", VIAS)
def test_qemu_img_layers_mixed_with_qmp_nodes(via: str, tmp_path: Path) -> None:
    run, where = run_value(via, bad.qemu_img_layers_mixed_with_qmp_nodes(), tmp_path)
    assert_one_line_error(run, where, "[0]", "no 'node-name'")


@pytest.mark.parametrize("wrapped", [False, True])
def test_qmp_query_block_is_refused_with_the_right_command(wrapped: bool, tmp_path: Path) -> None:
    """query-block (not query-named-block-nodes): say which command to use instead."""
    for via in VIAS:
        run, where = run_value(via, bad.query_block(wrapped), tmp_path)
        assert_one_line_error(run, where, "query-named-block-nodes")


@pytest.mark.parametrize("via", VIAS)
def test_qmp_error_reply(via: str, tmp_path: Path) -> None:
    run, where = run_value(via, bad.QMP_ERROR_REPLY, tmp_path)
    assert_one_line_error(run, where, "QMP error reply", "GenericError",
                          "Cannot find device='vdz' nor node-name='vdz'")


def test_qmp_error_reply_with_line_breaks_stays_one_line() -> None:
    run = kbrules("check", "-", stdin=json.dumps(bad.QMP_ERROR_REPLY_WITH_LINE_BREAKS).encode())
    line = assert_one_line_error(run, "QMP error reply", "first", "third")
    assert "\x1b" not in line


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("reply, needles", [c[1:] for c in bad.QMP_REPLIES], ids=[c[0] for c in bad.QMP_REPLIES])
def test_qmp_reply_of_another_shape(via: str, reply: Any, needles: list[str], tmp_path: Path) -> None:
    run, where = run_value(via, reply, tmp_path)
    assert_one_line_error(run, where, *needles)


@pytest.fixture(scope="module")
def other_commands(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What other qemu-img commands print as JSON, about a real image."""
    return bad.other_commands(tmp_path_factory.mktemp("others"))


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("command", ["check", "measure", "map"])
def test_other_qemu_img_commands_are_named(via: str, command: str, other_commands: dict[str, bytes],
                                           tmp_path: Path) -> None:
    """qemu-img check output has 'filename' and 'format' too: it once passed for an image
    without bitmaps (exit 0)."""
    run, where = run_input(via, other_commands[command], tmp_path)
    assert_one_line_error(run, where, f"this looks like qemu-img {command} --output=json")


@pytest.mark.parametrize("value, needles", [c[1:] for c in bad.LOOK_ALIKES], ids=[c[0] for c in bad.LOOK_ALIKES])
def test_look_alikes_are_refused(value: Any, needles: list[str]) -> None:
    assert_one_line_error(kbrules("check", "-", stdin=json.dumps(value).encode()), *needles)


def test_qmp_only_protocol_nodes() -> None:
    assert_one_line_error(kbrules("check", "-", stdin=json.dumps(bad.qmp_only_protocol_nodes()).encode()),
                          "no format node")


# ------------------------------------------------------ wrong types deep inside, paths

@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("mutate, needles", [c[1:] for c in bad.QEMU_IMG_DEEP],
                         ids=[c[0] for c in bad.QEMU_IMG_DEEP])
def test_qemu_img_wrong_type_deep_inside(via: str, mutate: bad.Mutator, needles: list[str],
                                         tmp_path: Path) -> None:
    run, where = run_value(via, bad.qemu_img_deep(mutate), tmp_path)
    assert_one_line_error(run, where, *needles)


def test_qemu_img_single_object_paths_have_no_index() -> None:
    """One image (no --backing-chain): paths start at the object's own keys."""
    doc = bad.qemu_img_single_object_without_name()
    line = assert_one_line_error(kbrules("check", "-", stdin=json.dumps(doc).encode()),
                                 "<stdin>: format-specific.data.bitmaps[1]:", "missing 'name'")
    assert "[0]" not in line


def test_nested_backing_image_path() -> None:
    """A nested backing-image (older tools print one): the path follows it."""
    doc = bad.nested_backing_image_with_a_bad_flag()
    run = kbrules("check", "-", stdin=json.dumps(doc).encode())
    assert_one_line_error(run, "backing-image.format-specific.data.bitmaps[0].flags[0]:",
                          "expected a string, got null")


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "return"])
@pytest.mark.parametrize("mutate, needles", [c[1:] for c in bad.QMP_DEEP], ids=[c[0] for c in bad.QMP_DEEP])
def test_qmp_wrong_type_deep_inside(wrapped: bool, mutate: bad.QmpMutator,
                                    needles: list[str], tmp_path: Path) -> None:
    value = bad.qmp_deep(mutate, wrapped)
    for via in VIAS:
        run, where = run_value(via, value, tmp_path)
        prefix = "return" if wrapped else ""
        first, *rest = needles
        assert_one_line_error(run, where, f"{where}: {prefix}{first}", *rest)


# ------------------------------------------------------------ duplicates, loops

@pytest.mark.parametrize("via", VIAS)
def test_two_bitmaps_of_one_name_in_a_layer_qemu_img(via: str, tmp_path: Path) -> None:
    run, where = run_value(via, bad.two_bitmaps_of_one_name_qemu_img(), tmp_path)
    assert_one_line_error(run, where, "[0].format-specific.data.bitmaps[2]:",
                          "a second bitmap named 'a' in one layer")


@pytest.mark.parametrize("via", VIAS)
def test_two_bitmaps_of_one_name_in_a_layer_qmp(via: str, tmp_path: Path) -> None:
    run, where = run_value(via, bad.two_bitmaps_of_one_name_qmp(), tmp_path)
    assert_one_line_error(run, where, "[0].dirty-bitmaps[5]:", "a second bitmap named 'current'")


def test_same_name_in_two_layers_is_fine() -> None:
    assert kbrules("check", "-", stdin=json.dumps(chain()).encode()).code == 0


def test_qmp_two_format_nodes_for_one_file() -> None:
    """A twin that holds the same bitmaps cannot change a verdict: it is no error
    (test_qmp.py); one that holds other bitmaps leaves the chain ambiguous."""
    nodes = bad.two_format_nodes_for_one_file()
    assert_one_line_error(kbrules("check", "-", stdin=json.dumps(nodes).encode()),
                          "two format nodes for file '/tmp/bitmaps.qcow2'",
                          "'libvirt-1-format'", "'twin-format'", "different bitmaps", "--domain")


def test_qmp_backing_loop() -> None:
    assert_one_line_error(kbrules("check", "-", stdin=json.dumps(bad.qmp_backing_loop()).encode()), "loop")


def test_qmp_backing_loop_below_the_top() -> None:
    assert_one_line_error(kbrules("check", "-", stdin=json.dumps(bad.qmp_backing_loop_below_the_top()).encode()),
                          "backing loop at 'b.qcow2'")


# ------------------------------------------------------------ paths, encodings

def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "top.qcow2"
    assert_one_line_error(kbrules("check", str(missing)), str(missing), "no such file")


def test_missing_json_path(tmp_path: Path) -> None:
    missing = tmp_path / "chain.json"
    assert_one_line_error(kbrules("check", str(missing), "--format", "json"), str(missing),
                          "no such file")


def test_directory(tmp_path: Path) -> None:
    assert_one_line_error(kbrules("check", str(tmp_path)), str(tmp_path), "is a directory")


def test_unreadable_file(tmp_path: Path) -> None:
    import os
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / "chain.json"
    path.write_text("[]")
    path.chmod(0)
    assert_one_line_error(kbrules("check", str(path)), str(path), "permission denied")


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("data, needles", [
    (b"\xff\xfe{}", ["not UTF-8 text (byte 0", "UTF-16 byte order mark"]),
    ('{"filename": "café.qcow2", "format": "qcow2"}'.encode("latin-1"), ["not UTF-8 text (byte 17"]),
    ('{"filename": "d\u00e9j\u00e0.qcow2", "format": "qcow2"}'.encode("cp1252"), ["not UTF-8 text"]),
    ('[{"filename": "a", "format": "raw"}]'.encode("utf-16"), ["not UTF-8", "UTF-16 byte order mark"]),
    # Without a BOM, UTF-16 is valid UTF-8 (NUL is a character): JSON refuses it.
    ('[{"filename": "a", "format": "raw"}]'.encode("utf-16-be"), ["not JSON", "line 1 column 1"]),
    (b'{"filename": "a\x80b", "format": "qcow2"}', ["not UTF-8 text (byte 15"]),
], ids=["ff-fe", "latin-1", "cp1252", "utf-16-bom", "utf-16-be-no-bom", "stray-byte"])
def test_not_utf8(via: str, data: bytes, needles: list[str], tmp_path: Path) -> None:
    run, where = run_input(via, data, tmp_path)
    assert_one_line_error(run, where, *needles)


@pytest.mark.parametrize("via", VIAS)
def test_utf8_bom_is_skipped(via: str, tmp_path: Path) -> None:
    """A UTF-8 byte order mark (Windows tools write one; qemu never does) is skipped, as
    jq skips it: the same report as without it."""
    doc = json.dumps(chain()).encode()
    with_bom, _ = run_input(via, b"\xef\xbb\xbf" + doc, tmp_path, "--format", "json")
    without, _ = run_input(via, doc, tmp_path, "--format", "json")
    assert with_bom.code == without.code == 0 and with_bom.err == ""
    assert with_bom.json() == without.json() and with_bom.json()["bitmaps"]


@pytest.mark.parametrize("via", ["stdin", "file.json"])
@pytest.mark.parametrize("data", [b"[" * 100000, b'{"a":' * 100000, b"[" * 100000 + b"]" * 100000,
                                  b'{"filename": "a", "format": "qcow2", "x": ' + b"[" * 50000 + b"]" * 50000 + b"}"],
                         ids=["open-arrays", "open-objects", "closed-arrays", "deep-unknown-key"])
def test_deeply_nested_json(via: str, data: bytes, tmp_path: Path) -> None:
    run, where = run_input(via, data, tmp_path)
    assert_one_line_error(run, where)
    assert "nested too deeply" in run.err or "truncated JSON" in run.err


def test_nested_a_little_is_ignored_where_unknown() -> None:
    doc = chain()
    doc[0]["children"] = json.loads("[" * 200 + "]" * 200)
    assert kbrules("check", "-", stdin=json.dumps(doc).encode()).code == 0


def test_huge_integer() -> None:
    """Python refuses int() of over 4300 digits with a ValueError: not a traceback."""
    doc = json.dumps(chain()).replace('"virtual-size": 1048576', '"virtual-size": ' + "9" * 5000)
    assert_one_line_error(kbrules("check", "-", stdin=doc.encode()), "<stdin>", "unreadable JSON")


@pytest.mark.parametrize("where, doc, path", [
    ("filename", '{"filename": "\\ud800.qcow2", "format": "qcow2"}', "filename:"),
    ("bitmap", json.dumps(chain()).replace('"name": "b"', '"name": "b\\udc80"'),
     "[0].format-specific.data.bitmaps[1].name:"),
    ("key", '[{"filename": "a", "format": "raw", "x": {"\\udfff": 1}}]', "[0].x (a key):"),
    ("top", '"\\ud83d"', "top level:"),
])
def test_lone_surrogate_escape(where: str, doc: str, path: str) -> None:
    """A \\ud800-\\udfff escape without its pair is not text: printing it later would
    raise UnicodeEncodeError (a traceback, with the JSON report half written)."""
    run = kbrules("check", "-", "--format", "json", stdin=doc.encode())
    assert_one_line_error(run, f"<stdin>: {path}", "lone UTF-16 surrogate")


def test_surrogate_pair_is_fine() -> None:
    doc = json.dumps(chain()).replace('"name": "b"', '"name": "b\\ud83d\\ude00"')
    run = kbrules("check", "-", "--format", "json", stdin=doc.encode())
    assert run.code == 0 and "b\U0001F600" in [b["name"] for b in run.json()["bitmaps"]]


def test_lone_surrogate_through_a_real_stdout(tmp_path: Path) -> None:
    """The real console: before the fix this printed half a report and a traceback."""
    path = tmp_path / "chain.json"
    path.write_text('{"filename": "\\ud800", "format": "raw"}')
    done = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(path), "--format", "json"],
                          capture_output=True, text=True, errors="replace")
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_json_without_suffix_is_an_image_with_a_note(tmp_path: Path) -> None:
    """A path is JSON by its name or by --json, never by its bytes (a guest writes the
    bytes of its disk). JSON text named otherwise, even UTF-16 as Windows PowerShell 5
    writes it, is a raw image to qemu-img, and a note on stderr says how to read it."""
    for name, data in (("nodes.txt", json.dumps(qmp_nodes()).encode("utf-16")),
                       ("chain", json.dumps(chain()).encode())):
        path = tmp_path / name
        path.write_bytes(data)
        run = kbrules("check", str(path), "--format", "json")
        assert run.code == 0 and [(l["filename"], l["format"]) for l in run.json()["chain"]] == [(str(path), "raw")]
        assert run.err.count("\n") == 1 and "starts like JSON text" in run.err and "--json" in run.err
    assert_one_line_error(kbrules("check", "--json", str(tmp_path / "nodes.txt")), "nodes.txt", "UTF-16")


# ------------------------------------------------------------ command lines

@pytest.mark.parametrize("argv, needles", [
    (["check", "-", "--format", "xml"], ["--format", "invalid choice: 'xml'"]),
    (["check", "-", "--frobnicate"], ["unrecognized arguments: --frobnicate"]),
    (["check", "-", "-Z"], ["unrecognized arguments: -Z"]),
    (["--frobnicate"], ["--frobnicate"]),
    (["lint", "-"], ["invalid choice: 'lint'"]),
    (["check", "-", "--bitmap"], ["--bitmap", "expected one argument"]),
    (["check", "-", "--top"], ["--top", "expected one argument"]),
    (["check", "-", "-"], ["standard input (-) can be read only once"]),
    (["check", "a.json", "--jobs", "0"], ["--jobs must be 1 or more"]),
    (["check", "-", "--image-format", "qcow2"], ["--image-format needs an image path, not -"]),
    (["check", "-", "-f", "raw", "--format", "json"], ["--image-format needs an image path"]),
    (["check", "a.img", "--json", "-f", "raw"], ["--json and --image-format contradict each other"]),
    (["check", "-", "--timeout", "0"], ["--timeout must be more than 0 seconds"]),
    (["check", "-", "--max-json-size", "12X"], ["--max-json-size", "not a size: '12X'"]),
])
def test_bad_command_line(argv: list[str], needles: list[str]) -> None:
    run = kbrules(*argv, stdin=json.dumps(chain()).encode())
    assert_one_line_error(run, *needles)


def test_top_with_an_image_path(tmp_path: Path) -> None:
    top = make_chain(tmp_path, [{"a": "ok"}])[0]
    assert_one_line_error(kbrules("check", str(top), "--top", "libvirt-1-format"),
                          "--top applies to QMP input, not to an image")


def test_image_format_on_a_json_file_reads_it_as_an_image(tmp_path: Path) -> None:
    """-f forces PATH to be an image: kbrules then refuses the JSON file as qcow2."""
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(chain()))
    run = kbrules("check", str(path), "-f", "qcow2")
    assert_one_line_error(run, str(path), "is not a valid qcow2 image (given with --image-format)")


def test_no_subcommand() -> None:
    assert_one_line_error(kbrules(), "no command given", "kbrules check")


def test_no_subcommand_exits_2_without_traceback() -> None:
    run = kbrules()
    assert run.code == 2 and "Traceback" not in run.err


# ------------------------------------------------------------ help and version

def _exiting(*argv: str) -> tuple[int, str, str]:
    """main() for options that end in argparse's sys.exit (--help, --version)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with pytest.raises(SystemExit) as stop:
            main(list(argv))
    code = stop.value.code
    return (0 if code is None else int(code)), out.getvalue(), err.getvalue()


def test_check_help_exits_0_and_gives_the_exit_codes() -> None:
    code, out, err = _exiting("check", "--help")
    assert code == 0 and err == ""
    text = " ".join(out.split())
    assert "exit status: 0 no error finding, 1 at least one error finding" in text
    assert "2 the input, the command line, qemu-img or the output failed" in text
    assert "130 and 143 interrupted (SIGINT, SIGTERM); 141 the reader of the output went away" in text


def test_help_exits_0() -> None:
    code, out, err = _exiting("--help")
    assert code == 0 and err == "" and "check" in out


def test_help_mentions_the_exit_codes() -> None:
    _, out, _ = _exiting("--help")
    assert "exit status" in out and "2" in out


def test_version() -> None:
    code, out, err = _exiting("--version")
    assert code == 0 and out.strip() == f"kbrules {__version__}" and err == ""
    assert __version__ != "0+unknown"


def test_console_script_help_and_version() -> None:
    """The real entry point, in a real process: exit codes as the shell sees them."""
    for argv, needle in ((["--help"], "check"), (["check", "--help"], "exit status"),
                         (["--version"], "kbrules ")):
        done = subprocess.run([sys.executable, "-m", "engine.cli", *argv],
                              capture_output=True, text=True)
        assert done.returncode == 0 and needle in done.stdout and done.stderr == "", argv


def test_batch_with_bad_inputs_reports_each_and_checks_the_rest(tmp_path: Path) -> None:
    """Several inputs: a bad one is reported (one line on stderr, an 'error' entry)
    and the others are still checked; the exit code is the worst of all."""
    good = tmp_path / "good.json"
    good.write_text(json.dumps(chain()))
    empty = tmp_path / "empty.json"
    empty.write_text("")
    run = kbrules("check", str(good), str(tmp_path / "missing.json"), str(empty), "--format", "jsonl")
    assert run.code == 2
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert [e["input"] for e in lines] == [str(good), str(tmp_path / "missing.json"), str(empty)]
    assert "bitmaps" in lines[0] and "no such file" in lines[1]["error"] and "empty input" in lines[2]["error"]
    assert run.err.count("\n") == 2 and "Traceback" not in run.err
