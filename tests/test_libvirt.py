"""Conformance floor: every verdict libvirt's own test suite asserts
(tests/fixtures/libvirt/cases.tsv) on libvirt's own QMP data, vendored from
../shared/peers/libvirt (and compared with it when it is there)."""

from __future__ import annotations

import csv
import json

import pytest

from engine.evaluate import evaluate
from engine.normalize import normalize
from engine.loader import load_rules
from helpers import LIBVIRT, PEERS, kbrules

with open(LIBVIRT / "cases.tsv", newline="") as f:
    CASES = [(r["file"], r["bitmap"], r["expected"]) for r in csv.DictReader(f, delimiter="\t")]


def test_vendored_data_is_the_shared_copy() -> None:
    if not PEERS.is_dir():
        pytest.skip(f"no shared peer data at {PEERS} to compare the vendored copy with")
    shared = sorted(p.name for p in PEERS.iterdir() if p.suffix in (".json", ".tsv"))
    vendored = sorted(p.name for p in LIBVIRT.iterdir() if p.suffix in (".json", ".tsv"))
    assert vendored == shared
    for name in shared:
        assert (LIBVIRT / name).read_bytes() == (PEERS / name).read_bytes(), name


def test_cases_file_is_read() -> None:
    assert len(CASES) >= 20 and {e for _, _, e in CASES} == {"valid", "invalid"}


@pytest.mark.parametrize("file, bitmap, expected", CASES, ids=[f"{f}-{b}" for f, b, _ in CASES])
def test_verdict_matches_libvirt(file: str, bitmap: str, expected: str) -> None:
    chain = normalize(json.loads((LIBVIRT / f"{file}.json").read_text()), file)
    (verdict,) = evaluate(chain, load_rules(), [bitmap]).bitmaps
    assert verdict.valid is (expected == "valid"), verdict.findings


@pytest.mark.parametrize("file, bitmap, expected", CASES, ids=[f"{f}-{b}" for f, b, _ in CASES])
def test_cli_exit_code_matches_libvirt(file: str, bitmap: str, expected: str) -> None:
    run = kbrules("check", str(LIBVIRT / f"{file}.json"), "--bitmap", bitmap, "--format", "json")
    assert run.code == (0 if expected == "valid" else 1), run.err
    assert [b["valid"] for b in run.json()["bitmaps"]] == [expected == "valid"]
