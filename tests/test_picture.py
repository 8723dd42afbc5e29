"""The chain as a picture (engine/picture.py) and its drawings (engine/draw.py): the
grid from real chains, elision of big ones, text wrapped to the width with commands
whole, Unicode/ASCII and colour by terminal, and HTML/SVG that stay inert and
self-contained whatever the names hold."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from builders import bitmap, layer, qemu_img_chain, qmp_bitmap, qmp_disk
from engine.draw import PLAIN, Style, grid_text, page_html, page_svg, remediation_pieces, report_text
from engine.evaluate import evaluate
from engine.loader import load_rules
from engine.normalize import normalize
from engine.picture import STATES, Gap, picture, view
from helpers import kbrules, make_chain

ROOT = Path(__file__).resolve().parents[1]


def _report(value: Any, bitmaps: Any = None) -> Any:
    return evaluate(normalize(value, "test"), load_rules(), bitmaps)


def _cells(grid: Any) -> dict[tuple[int, str], tuple[str, list[str]]]:
    """(layer, bitmap) -> (state, rules marked there)."""
    return {(row.layer, col.name): (cell.state, [m.rule for m in cell.marks])
            for row, cells in zip(grid.rows, grid.cells) for col, cell in zip(grid.columns, cells)}


# The grid ---------------------------------------------------------------------------------

def test_grid_of_a_real_chain(tmp_path: Path) -> None:
    paths = make_chain(tmp_path, [{"daily": "ok", "paused": "ok", "weekly": "ok"},
                                  {"daily": "ok", "paused": "disabled"},
                                  {"daily": "ok", "weekly": "ok", "crashed": "in-use"}])
    run = kbrules("check", str(paths[0]), "--format", "json")
    grid = picture(_report(json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "--backing-chain", paths[0].name], cwd=tmp_path,
        capture_output=True, text=True, check=True).stdout)))
    assert [c.name for c in grid.columns] == ["crashed", "daily", "paused", "weekly"]
    assert [c.valid for c in grid.columns] == [b["valid"] for b in run.json()["bitmaps"]]
    cells = _cells(grid)
    assert cells[(0, "daily")] == cells[(2, "daily")] == ("recording", [])  # a healthy column
    assert cells[(1, "paused")] == ("disabled", ["bitmap-recording"])
    assert cells[(1, "weekly")] == ("absent", [])  # the gap...
    assert cells[(2, "weekly")] == ("recording", ["bitmap-contiguous"])  # ...and the stray copy
    assert cells[(0, "crashed")] == ("absent", ["bitmap-in-top"])
    assert cells[(2, "crashed")] == ("in-use", ["bitmap-contiguous", "bitmap-consistent"])


def test_every_state_and_a_layer_mark() -> None:
    nodes = qmp_disk([[qmp_bitmap("rec"), qmp_bitmap("off", recording=False), qmp_bitmap("job", busy=True),
                       qmp_bitmap("gone", persistent=False), qmp_bitmap("bad", inconsistent=True)],
                      [qmp_bitmap("rec")]])
    grid = picture(_report(nodes))
    cells = _cells(grid)
    assert {name: cells[(0, name)][0] for name in ("rec", "off", "job", "gone", "bad")} == \
        {"rec": "recording", "off": "disabled", "job": "busy", "gone": "transient", "bad": "in-use"}
    assert cells[(1, "off")] == ("absent", [])
    assert set(grid.states()) == set(STATES)
    raw_base = [layer("top.qcow2", [bitmap("a", "auto")], "base.img", backing_format="raw"),
                layer("base.img", format="raw")]
    grid = picture(_report(raw_base))
    assert [m.rule for m in grid.rows[1].marks] == ["layer-cannot-hold-bitmaps"]
    assert grid.rows[1].worst == "info" and not grid.rows[0].marks


def test_a_long_chain_keeps_what_matters() -> None:
    # 60 layers; 'a' in the top 10, a gap, then a stray copy at 40; 'b' everywhere.
    layers = [[bitmap("a", "auto")] * (i < 10 or i == 40) + [bitmap("b", "auto")] for i in range(60)]
    grid = picture(_report(qemu_img_chain(layers)))
    shown = view(grid, max_rows=24)
    rows = [r for r in shown.rows if isinstance(r, int)]
    gaps = [r for r in shown.rows if isinstance(r, Gap)]
    assert {0, 9, 10, 39, 40, 41, 59} <= set(rows)  # top, base, where a run ends or starts, the mark
    assert sum(g.count for g in gaps) + len(rows) == 60 and all(g.count >= 2 for g in gaps)
    text = "\n".join(grid_text(grid))
    assert "⋮" in text and "more layers (11 to 38), each like layer 10" in text
    assert len(text.splitlines()) < 30


def test_many_bitmaps_wrap_and_elide() -> None:
    names = [f"backup-{i:03}" for i in range(300)]
    chain = qemu_img_chain([[bitmap(n, "auto") for n in names],
                            [bitmap(n, "auto" if n != "backup-150" else "in-use") for n in names]])
    grid = picture(_report(chain))
    lines = grid_text(grid, Style(width=80))
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "backup-150" in text  # a broken bitmap is never the one left out
    assert "(252 more bitmaps not drawn, all valid: see the table below)" in text
    shown = view(grid)
    assert len(shown.columns) == 48 and shown.hidden_columns == 252


# Text -------------------------------------------------------------------------------------

def test_text_fits_the_width_and_keeps_commands_whole() -> None:
    long = "/var/lib/libvirt/images/" + "a-rather-long-directory-name/" * 3 + "vm1-snapshot.qcow2"
    chain = [layer(long, [bitmap("daily", "auto")], "base.qcow2"),
             layer("base.qcow2", [bitmap("daily")])]
    report = _report(chain)
    for width in (60, 80, 120):
        text = report_text(report, Style(width=width))
        (finding,) = report.bitmaps[0].findings
        (command,) = finding.commands
        assert command in finding.remediation  # the JSON has the same text, in one line
        command_lines = [line for line in text.splitlines() if line.strip() == command]
        assert len(command_lines) == 1  # whole, on a line of its own
        others = [line for line in text.splitlines() if line.strip() != command]
        # Only a word longer than the width (the path) may stick out.
        assert all(len(line) <= width or long in line for line in others), (width, text)


def test_remediation_pieces() -> None:
    text = "Remove it, offline: qemu-img bitmap --remove -- 'a' 'b'. Then take a backup."
    assert remediation_pieces(text, ["qemu-img bitmap --remove -- 'a' 'b'"]) == [
        ("Remove it, offline:", False), ("qemu-img bitmap --remove -- 'a' 'b'", True),
        ("Then take a backup.", False)]
    assert remediation_pieces("No command here.", []) == [("No command here.", False)]


def test_ascii_and_colour_follow_the_style() -> None:
    report = _report(qemu_img_chain([[bitmap("a", "auto")], [bitmap("a")], []]))
    plain = report_text(report, PLAIN)
    assert "\033[" not in plain and "✗" in plain and "·" in plain
    ascii_text = report_text(report, Style(unicode=False))
    assert ascii_text.isascii() and " x" in ascii_text
    coloured = report_text(report, Style(colour=True))
    assert "\033[33mdisabled\033[0m" in coloured and "\033[1;31mERROR\033[0m" in coloured
    assert re.sub("\033\\[[0-9;]*m", "", coloured) == plain


def _on_a_terminal(*args: str, env: dict[str, str]) -> str:
    """kbrules run with a pseudo-terminal as stdout (as a person runs it)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], stdout=slave,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(master)
    return out.decode("utf-8")


@pytest.mark.parametrize("no_color", [None, "1"])
def test_colour_only_on_a_terminal_and_never_with_no_color(no_color: str | None) -> None:
    example = str(ROOT / "docs" / "examples" / "broken-chain.json")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    env.update(LC_ALL="C.UTF-8", TERM="xterm", KBRULES_CACHE_DIR="")
    if no_color:
        env["NO_COLOR"] = no_color
    tty = _on_a_terminal("check", example, env=env)
    piped = subprocess.run([sys.executable, "-m", "engine.cli", "check", example], cwd=ROOT, env=env,
                           capture_output=True, text=True).stdout
    assert "\033[" not in piped
    assert ("\033[" in tty) is (no_color is None)
    assert re.sub("\033\\[[0-9;]*m", "", tty).replace("\r\n", "\n") == piped


def test_width_from_columns_and_ascii_when_stdout_cannot_show_unicode() -> None:
    example = str(ROOT / "docs" / "examples" / "broken-chain.json")
    env = {**os.environ, "KBRULES_CACHE_DIR": "", "LC_ALL": "C.UTF-8"}
    wide = subprocess.run([sys.executable, "-m", "engine.cli", "check", example], cwd=ROOT,
                          env={**env, "COLUMNS": "160"}, capture_output=True, text=True).stdout
    narrow = subprocess.run([sys.executable, "-m", "engine.cli", "check", example], cwd=ROOT,
                            env={**env, "COLUMNS": "60"}, capture_output=True, text=True).stdout
    assert max(map(len, narrow.splitlines())) <= 60 < max(map(len, wide.splitlines()))
    lines = wide.splitlines()
    header = next(n for n, line in enumerate(lines) if line.startswith("chain from")) + 1
    assert "weekly" in lines[header]  # every bitmap column beside the files
    ascii_run = subprocess.run([sys.executable, "-m", "engine.cli", "check", example], cwd=ROOT,
                               env={**env, "PYTHONIOENCODING": "ascii"}, capture_output=True)
    assert ascii_run.returncode == 1 and ascii_run.stdout.isascii()
    assert b" x" in ascii_run.stdout and b"recording" in ascii_run.stdout


# HTML and SVG -----------------------------------------------------------------------------

HOSTILE = ['it\'s "quoted" & <b>bold</b>', "<script>alert(1)</script>", "new\nline",
           "x" * 1023, "\u202eevil\u202c", "zero\u200bwidth", "../../etc/passwd", "' onmouseover='x"]


def _hostile_report() -> Any:
    nodes = qmp_disk([[qmp_bitmap(n) for n in HOSTILE], [qmp_bitmap(HOSTILE[1], recording=False)]],
                     directory="/img/<script>")
    return _report(nodes)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _inert(markup: str) -> None:
    """No script, no handler, nothing fetched, no invisible or reordering characters."""
    assert "<script" not in markup.lower() and "onmouseover=" not in markup.replace("&#x27; onmouseover", "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", markup)
    assert "@import" not in markup and "url(" not in markup
    hidden = [c for c in markup if unicodedata.category(c) in ("Cf", "Cs")
              or (unicodedata.category(c) == "Cc" and c not in "\n\t")]
    assert not hidden


def test_html_is_self_contained_and_inert() -> None:
    page = page_html([("vm<1>.qcow2", _hostile_report()), ("bad\u202e.json", "could not read it")], "1.0")
    _inert(page)
    parser = _Tags()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags and "iframe" not in tags
    assert all(not any(k.startswith("on") for k in attrs) for _, attrs in parser.tags)
    csp = [a for t, a in parser.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in (csp[0]["content"] or "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "\\u202eevil\\u202c" in page
    assert "new\\nline" in page and "error: could not read it" in page
    assert page.count('class="kb-grid"') == 1


def test_svg_is_well_formed_and_inert() -> None:
    image = page_svg([("vm<1>.qcow2", _hostile_report()), ("other", "no such file")])
    _inert(image)
    root = ET.fromstring(image)  # well-formed XML, whatever the names held
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    names = [el.tag.split("}")[1] for el in root.iter()]
    assert "script" not in names and "foreignObject" not in names and "image" not in names
    assert not [el for el in root.iter() if any(k.startswith("on") or "href" in k for k in el.attrib)]
    width = float(root.attrib["width"])
    assert width < 2500  # a 1023-character name is cut in the picture (its title has it whole)
    assert any(el.text == "x" * 1023 for el in root.iter("{http://www.w3.org/2000/svg}title"))


def test_format_html_and_svg_from_the_command_line(tmp_path: Path) -> None:
    paths = make_chain(tmp_path, [{"daily": "ok"}, {"daily": "disabled"}])
    html = kbrules("check", str(paths[0]), "--format", "html")
    assert html.code == 1 and html.out.startswith("<!DOCTYPE html>") and "kb-disabled" in html.out
    svg = kbrules("check", str(paths[0]), "--format", "svg")
    assert svg.code == 1 and ET.fromstring(svg.out).tag.endswith("svg")
    both = kbrules("check", str(paths[0]), str(tmp_path / "missing.qcow2"), "--format", "html")
    assert both.code == 2 and both.out.count("<section>") == 2 and "missing.qcow2" in both.err
    jq = kbrules("check", str(paths[0]), "--format", "svg", "--engine", "jq")
    assert jq.code == 2 and "--format json" in jq.err
