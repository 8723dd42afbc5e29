"""kbrules as a library (engine.api, documented in README): the same verdicts and the
same JSON as the command line, on real images and on parsed JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.api import KbrulesError, check_path, check_value, to_dict
from helpers import info_json, kbrules, make_chain

CHAIN = [{"daily": "ok", "weekly": "ok"}, {"daily": "in-use", "weekly": "ok"}, {"weekly": "ok"}]


@pytest.fixture(scope="module")
def top(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chain(tmp_path_factory.mktemp("api"), CHAIN)[0]


def test_check_path_is_kbrules_check(top: Path) -> None:
    report = check_path(top)
    assert report.has_error
    assert [(v.name, v.valid, [f.rule for f in v.findings]) for v in report.bitmaps] == [
        ("daily", False, ["bitmap-consistent"]), ("weekly", True, [])]
    assert to_dict(report) == kbrules("check", str(top), "--format", "json").json()


def test_check_value_takes_parsed_json(top: Path) -> None:
    value = info_json(top)
    report = check_value(value, ["weekly", "nope"], select=["bitmap-exists"])
    assert report.rules == ("bitmap-exists",)
    assert [(v.name, v.valid) for v in report.bitmaps] == [("weekly", True), ("nope", False)]
    assert to_dict(report) == kbrules("check", "-", "--bitmap", "weekly", "--bitmap", "nope",
                                      "--select", "bitmap-exists", "--format", "json",
                                      stdin=json.dumps(value).encode()).json()


@pytest.mark.parametrize("call, says", [
    (lambda tmp: check_path(tmp / "missing.qcow2"), "missing.qcow2: no such file"),
    (lambda tmp: check_value({"filename": "x"}), "missing 'format'"),
    (lambda tmp: check_value([], select=["no-such-rule"]), "unknown rule id 'no-such-rule'"),
], ids=["missing", "bad-json", "bad-rule"])
def test_errors_are_kbrules_errors(call, says: str, tmp_path: Path) -> None:
    with pytest.raises(KbrulesError, match=says):
        call(tmp_path)
