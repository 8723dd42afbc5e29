"""Metrics for the Prometheus tests: what kbrules' JSON report says, as the series
`--format prometheus` must give (written here from README's JSON contract, not from
engine/formats.py, so that the two can disagree), and the series of an exposition text,
read back with prometheus_client's own parser."""

from __future__ import annotations

import os
import shutil
from typing import Any, Mapping, Optional

Series = tuple[str, frozenset[tuple[str, str]]]  # metric name, its labels (empty ones left out)
# Bitmap names a guest could choose: quotes, backslashes, newlines and other control
# characters, non-ASCII, the longest name QEMU takes (1023 bytes), a fake sample.
HOSTILE_BITMAPS = ['say "hi"', "back\\slash\\", "new\nline", "tab\tcr\rbell\a", "é✓ 名前",
                   "x" * 1023, "{le=\"0.5\"} 1\n# HELP fake"]
RUN = ("kbrules_last_run_timestamp_seconds", "kbrules_last_run_duration_seconds", "kbrules_build_info")


def series(name: str, **labels: str) -> Series:
    # Prometheus makes no difference between an empty label and a missing one.
    return name, frozenset((k, v) for k, v in labels.items() if v != "")


def expected(entries: list[dict[str, Any]],
             unchecked: Optional[Mapping[str, tuple[str, str, str]]] = None) -> dict[Series, float]:
    """The series of a JSON report (kbrules check --format jsonl), all but the run's
    own (RUN). The JSON of an input that was not checked has no domain and no reason:
    `unchecked` gives them, input -> (domain, disk, reason)."""
    out: dict[Series, float] = {}
    for entry in entries:
        name = entry["input"]
        if "error" in entry or "skipped" in entry:
            domain, disk, reason = (unchecked or {})[name]
            metric = "kbrules_input_error" if "error" in entry else "kbrules_input_skipped"
            out[series(metric, domain=domain, disk=disk, reason=reason)] = 1
            continue
        at = {"domain": entry["domain"]["name"], "disk": entry["domain"]["disk"]} if entry["domain"] \
            else {"domain": "", "disk": path_label(name)}
        for bitmap in entry["bitmaps"]:
            out[series("kbrules_bitmap_valid", **at, bitmap=bitmap["name"])] = float(bitmap["valid"])
            _count(out, at, bitmap["findings"], bitmap=bitmap["name"])
        for point in entry["checkpoints"]:
            out[series("kbrules_checkpoint_usable", **at, checkpoint=point["name"])] = float(point["usable"])
            newest = point["name"] == entry["newest_usable_checkpoint"]
            out[series("kbrules_checkpoint_newest_usable", **at, checkpoint=point["name"])] = float(newest)
            _count(out, at, point["findings"], checkpoint=point["name"])
        _count(out, at, entry["findings"])
    return out


def path_label(path: str) -> str:
    """A path as a label (README): its bytes that are not UTF-8 written \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _count(out: dict[Series, float], at: dict[str, str], findings: list[dict[str, Any]], **about: str) -> None:
    for f in findings:
        key = series("kbrules_findings", **at, **about, rule=f["rule"], severity=f["severity"])
        out[key] = out.get(key, 0) + 1


def parse(text: str) -> dict[Series, float]:
    """Every sample of an exposition text, by prometheus_client's parser. (Read a file
    as bytes: a CR in a label is no line end, and universal newlines would make it one.)"""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = series(sample.name, **sample.labels)
            assert key not in out, f"a series twice: {key}"
            out[key] = sample.value
    return out


def without_run(found: Mapping[Series, float]) -> dict[Series, float]:
    return {k: v for k, v in found.items() if k[0] not in RUN}


def promtool_missing() -> Optional[str]:
    return None if shutil.which("promtool") else "promtool is not installed (apt-get install prometheus)"
