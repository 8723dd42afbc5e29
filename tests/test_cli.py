"""The command line's own shape: options that take values never swallow the inputs
after them, and the formats come from one table."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.formats import FORMATS
from helpers import kbrules, make_chain


@pytest.fixture(scope="module")
def top(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chain(tmp_path_factory.mktemp("cli"), [{"a": "ok"}, {"a": "disabled"}])[0]


@pytest.mark.parametrize("argv", [
    ["--select", "bitmap-recording", "{top}"],
    ["--select", "bitmap-recording,bitmap-in-top", "{top}"],
    ["--select", "bitmap-recording", "--select", "bitmap-in-top", "{top}"],
    ["--ignore", "bitmap-contiguous", "{top}"],
    ["{top}", "--select", "bitmap-recording"],
], ids=["select-then-path", "comma-list", "repeated", "ignore-then-path", "path-first"])
def test_rule_options_leave_the_path_alone(argv: list[str], top: Path) -> None:
    run = kbrules("check", *[a.format(top=top) for a in argv], "--format", "json")
    assert run.code == 1 and run.err == "", run
    report = run.json()
    assert report["chain"][0]["filename"] == str(top)
    assert report["bitmaps"][0]["findings"][0]["rule"] == "bitmap-recording"
    if "--select" in argv:
        assert set(report["rules"]) <= {"bitmap-recording", "bitmap-in-top"}


def test_format_choices_are_the_table(top: Path) -> None:
    for name in FORMATS:
        run = kbrules("check", str(top), "--format", name)
        assert run.code == 1 and run.out and run.err == "", name
    bad = kbrules("check", "-", "--format", "yaml")
    assert bad.code == 2 and all(name in bad.err for name in FORMATS)
