"""A report drawn for people: text for a terminal (wrapped to a width, Unicode or
ASCII, coloured or not), one self-contained HTML page, one SVG image. Pure: the
caller (engine.formats) picks the style from the terminal and writes the result.

Every name in a drawing comes from the input, and a guest controls the bytes of its
disk: names go through text.show() (control and invisible characters escaped) and,
in HTML and SVG, through html.escape(); nothing from the input becomes markup, a
URL or a style."""

from __future__ import annotations

import html
import re
import shlex
import textwrap
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from .model import Finding, Report
from .picture import STATE_DOC, Gap, Grid, picture, view
from .plan import Step, plan
from .text import cols, count, pad, show, table


@dataclass(frozen=True)
class Style:
    """How text is drawn: `width` columns, Unicode or ASCII, ANSI colour or none."""

    width: int = 80
    unicode: bool = True
    colour: bool = False


PLAIN = Style()

GLYPHS = {
    True: {"absent": "·", "error": "✗", "warning": "!", "info": "i", "gap": "⋮"},
    False: {"absent": "-", "error": "x", "warning": "!", "info": "i", "gap": ":"},
}
MARK_DOC = {"error": "breaks a rule (an error)", "warning": "a warning", "info": "a note"}
# ANSI colours (SGR): states in plain colours, marks bold.
STATE_SGR = {"recording": "32", "disabled": "33", "in-use": "31", "transient": "35",
             "busy": "36", "absent": "2"}
SEVERITY_SGR = {"error": "1;31", "warning": "1;33", "info": "1;34"}

# The text report's column headers (the articles name them: tests/test_docs.py).
CHAIN_HEADERS = ("LAYER", "FORMAT", "FILE")
BITMAP_HEADERS = ("BITMAP", "VALID", "FIRST FAILING RULE", "LAYER", "FILE")
NAME_WIDTH = 16  # a bitmap's column shows at most this much of its name
FILE_WIDTH = 40  # the SVG shows at most this much of a file name (its tooltip all of it)


def first_error(findings: Sequence[Finding]) -> Optional[Finding]:
    """A bitmap's first failing rule: findings come errors first, and a warning alone
    does not fail a bitmap."""
    return findings[0] if findings and findings[0].severity == "error" else None


def _paint(text: str, sgr: str, style: Style) -> str:
    return f"\033[{sgr}m{text}\033[0m" if style.colour and text else text


def _name(name: str, width: int = 0) -> str:
    """A bitmap name as the text report shows it: escaped, "" when empty."""
    return show(name, width) or '""'


# Text: the chain picture ---------------------------------------------------------------

def grid_text(grid: Grid, style: Style = PLAIN, indent: str = "  ") -> list[str]:
    """The chain as a table: LAYER, FORMAT, FILE, then one column per bitmap with its
    copy's state in each layer. Bitmap columns that do not fit the width continue in
    further blocks below, keyed by LAYER; long chains and many bitmaps are elided
    (picture.view), with a count."""
    glyph = GLYPHS[style.unicode]
    shown = view(grid)
    rows = [r for r in shown.rows if isinstance(r, int)]

    def cell(row: int, column: int) -> tuple[int, str]:
        c = grid.cells[row][column]
        word = glyph["absent"] if c.state == "absent" else c.state
        text = _paint(word, STATE_SGR[c.state], style)
        width = cols(word)
        if c.worst:
            text += " " + _paint(glyph[c.worst], SEVERITY_SGR[c.worst], style)
            width += 1 + cols(glyph[c.worst])
        return width, text

    def layer_label(row: int) -> tuple[int, str]:
        r = grid.rows[row]
        if not r.worst:
            return cols(str(r.layer)), str(r.layer)
        return len(str(r.layer)) + 2, f"{r.layer} " + _paint(glyph[r.worst], SEVERITY_SGR[r.worst], style)

    # File names whole: when they are long, the bitmap columns go to the blocks below.
    labels = {i: [layer_label(i), (cols(grid.rows[i].format), grid.rows[i].format),
                  (cols(show(grid.rows[i].filename)), show(grid.rows[i].filename))]
              for i in rows}
    label_widths = [max([cols(h)] + [labels[i][k][0] for i in rows]) for k, h in enumerate(CHAIN_HEADERS)]
    names = {j: _name(grid.columns[j].name, NAME_WIDTH) for j in shown.columns}
    widths = {j: max([cols(names[j])] + [cell(i, j)[0] for i in rows]) for j in shown.columns}

    # Columns into blocks: the first beside the file names, the rest keyed by layer.
    blocks: list[list[int]] = [[]]
    used = len(indent) + sum(label_widths) + 2 * (len(label_widths) - 1)
    for j in shown.columns:
        if used + 2 + widths[j] > style.width and (blocks[-1] or len(blocks) == 1):
            blocks.append([])
            used = len(indent) + label_widths[0]
        blocks[-1].append(j)
        used += 2 + widths[j]

    out: list[str] = []
    for number, block in enumerate(blocks):
        nlabels = 3 if number == 0 else 1
        if number:
            out.append("")
        head = [pad(h, w) for h, w in zip(CHAIN_HEADERS[:nlabels], label_widths)]
        out.append(indent + "  ".join(head + [pad(names[j], widths[j]) for j in block]).rstrip())
        for r in shown.rows:
            if isinstance(r, Gap):
                what = f"{count(r.count, 'more layer')} ({r.first} to {r.last}), each like layer {r.first - 1}"
                out.append(indent + pad(glyph["gap"], label_widths[0]) + "  " + what)
                continue
            parts = [pad(text, w + len(text) - n) for (n, text), w in
                     zip(labels[r][:nlabels], label_widths)]
            for j in block:
                n, text = cell(r, j)
                parts.append(text + " " * (widths[j] - n))
            out.append(indent + "  ".join(parts).rstrip())
    if shown.hidden_columns:
        hidden_invalid = any(grid.columns[j].valid is False for j in range(len(grid.columns))
                           if j not in shown.columns)
        out.append(indent + f"({count(shown.hidden_columns, 'more bitmap')} not drawn"
                   + ("" if hidden_invalid else ", all valid") + ": see the table below)")
    legend = [f"{glyph[s]} {MARK_DOC[s]}" for s in grid.severities()]
    if "absent" in grid.states():
        legend.append(f"{glyph['absent']} no copy in this layer")
    if legend:
        out.append(indent + "   ".join(legend))
    return out


# Text: the whole report -----------------------------------------------------------------

def _wrap(text: str, first: str, rest: str, width: int) -> list[str]:
    """Prose wrapped to `width`, words whole: an option or a path is never broken."""
    return textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False) or [first.rstrip()]


def remediation_pieces(text: str, commands: Sequence[str]) -> list[tuple[str, bool]]:
    """A remediation as (piece, is_command): the prose between the commands. A command
    ends its sentence: the punctuation right after it is left to the prose."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for command in commands:
        at = text.find(command, pos)
        if at < 0:  # cannot happen for a finding made by evaluate(); draw it as prose
            continue
        out += [(text[pos:at], False), (command, True)]
        pos = at + len(command)
    out.append((text[pos:], False))
    pieces: list[tuple[str, bool]] = []
    for number, (piece, is_command) in enumerate(out):
        if not is_command:
            if number and out[number - 1][1]:
                piece = piece.lstrip(" .,;")
            piece = piece.strip()
        if piece:
            pieces.append((piece, is_command))
    return pieces


def _remediation_lines(f: Finding, style: Style) -> list[str]:
    first, rest = "    fix: ", "         "
    lines: list[str] = []
    for piece, command in remediation_pieces(f.remediation, f.commands):
        if command:
            lines.append(rest + "  " + show(piece))  # whole, even when wider than the width
        else:
            lines += _wrap(show(piece), rest if lines else first, rest, style.width)
    if not lines:
        lines = [first.rstrip()]
    elif not lines[0].startswith(first):  # a command first: the label on a line of its own
        lines.insert(0, first.rstrip())
    return lines


def finding_lines(f: Finding, about: str, style: Style = PLAIN) -> list[str]:
    head = f"{_paint(f.severity.upper(), SEVERITY_SGR[f.severity], style)} {f.rule}{about}, " \
           f"layer {f.layer} ({show(f.filename)})"
    lines = _wrap(head, "  ", "    ", style.width + (len(head) - len(_strip_sgr(head))))
    lines += _wrap(show(f.message), "    ", "    ", style.width)
    lines += _remediation_lines(f, style)
    if f.caveat:
        lines += _wrap(f.caveat, "    note: ", "          ", style.width)
    return lines


def _strip_sgr(text: str) -> str:
    return re.sub("\033\\[[0-9;]*m", "", text)


def report_text(report: Report, style: Style = PLAIN) -> str:
    """The text report: the chain picture, a table of the bitmaps, the findings with
    what to do, and a summary line."""
    chain = report.chain
    grid = picture(report)
    per = "; one column per bitmap:" if grid.columns else ":"
    out = _wrap(overall(report), "", "  ", style.width)
    if chain.domain is not None:
        d = chain.domain
        out += _wrap(f"domain {show(d.name)}, disk {show(d.disk)} "
                     f"({'running: read live over QMP' if d.running else 'shut off: read with qemu-img'})",
                     "", "  ", style.width)
    out += _wrap(f"chain from {chain.source}, {count(len(chain.layers), 'layer')}, top first{per}",
                 "", "  ", style.width)
    out += grid_text(grid, style)
    if not chain.complete:
        last = chain.layers[-1]
        out += _wrap(f"(incomplete: layer {last.layer} has the backing file "
                     f"{show(last.backing or '?')}, which is not in the input)", "  ", "   ", style.width)
    out.append("")
    if not report.bitmaps:
        out.append("no bitmaps in this chain (name one with --bitmap to check it anyway)")
    else:
        rows = [list(BITMAP_HEADERS)]
        for v in report.bitmaps:
            first = first_error(v.findings)
            rows.append([_name(v.name, 40), "yes" if v.valid else "NO",
                         first.rule if first else "-", str(first.layer) if first else "-",
                         first.filename if first else "-"])
        # The file names last, shortened so that a line fits the width.
        room = style.width - cols(table([r[:-1] + [""] for r in rows])[0].rstrip()) - 2
        for row in rows[1:]:
            row[-1] = show(row[-1], max(12, room)) if row[-1] != "-" else "-"
        out += table(rows)
    if chain.domain is not None:
        out += ["", *checkpoint_lines(report)]
    findings = [(f, f", bitmap '{show(v.name)}'") for v in report.bitmaps for f in v.findings]
    findings += [(f, f", checkpoint '{show(c.name)}'") for c in report.checkpoints for f in c.findings]
    findings += [(f, "") for f in report.findings]
    if findings:
        out += ["", "findings:"]
        for f, about in findings:
            out += finding_lines(f, about, style)
    steps = plan(report)
    if steps:
        out += ["", *_wrap("what to do, in this order (as a script: kbrules plan):", "", "  ", style.width)]
        out += plan_lines(steps, style)
    valid = sum(v.valid for v in report.bitmaps)
    summary = f"{count(len(report.bitmaps), 'bitmap')} checked: {valid} valid, {len(report.bitmaps) - valid} not valid"
    errors = sum(f.severity == "error" for f in report.findings)
    if report.findings:
        summary += f"; {count(len(report.findings), 'chain finding')} ({count(errors, 'error')})"
    out += ["", summary]
    return "\n".join(out)


def _names(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(_name(n, 40) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def overall(report: Report) -> str:
    """The answer in one line, first in the text report; "NOT fit" exactly when the
    exit status is 1."""
    good = [v.name for v in report.bitmaps if v.valid]
    bad = [v.name for v in report.bitmaps if not v.valid]
    layer_errors = [f for f in report.findings if f.severity == "error"]
    if not report.bitmaps:
        line = "no bitmap to judge: the next backup can only be a full one"
    else:
        line = f"{len(good)} of {count(len(report.bitmaps), 'bitmap')} can serve an incremental backup"
        line += f" ({_names(good)})" if good else ""
        line += f"; not: {_names(bad)}" if bad else ""
    if layer_errors:
        where = ", ".join(f"{f.rule} in layer {f.layer}" for f in layer_errors[:3])
        line += f"; and the chain itself is unfit whatever the bitmap ({where})"
    if report.chain.domain is not None:
        newest = report.newest_usable
        line += f"; newest usable checkpoint: {_name(newest) if newest is not None else 'none'}"
    return ("verdict: NOT fit: " if report.has_error else "verdict: fit: ") + line


def plan_lines(steps: Sequence[Step], style: Style = PLAIN) -> list[str]:
    """The plan for people: grouped by what it repairs, each command whole on a line
    of its own (shell-quoted, to copy)."""
    out: list[str] = []
    group: object = ()
    for step in steps:
        about = ("layer", step.layer) if step.bitmap is None else ("bitmap", step.bitmap)
        if about != group:
            group = about
            out.append(f"  layer {step.layer}:" if step.bitmap is None else f"  bitmap {_name(step.bitmap)}:")
        out += _wrap(show(step.say), "    ", "    ", style.width)
        if step.command is not None:
            out.append("      " + " ".join(shlex.quote(show(word)) for word in step.command))
    return out


SCRIPT_WIDTH = 84  # comment text: "# " and 84 characters fit a terminal and the docs' code box


def script(results: Sequence[tuple[str, Union[Report, str]]], directory: str, version: str) -> str:
    """The plan as a POSIX shell script that a person reads, then runs: commented per
    input and per bitmap, stopping at the first command that fails. Comments hold only
    shown text (a newline in a name cannot end a comment); each word of a command is
    quoted for the shell (a name can hold any character but NUL)."""
    out = ["#!/bin/sh", f"# The repair plan from kbrules {version}. Read it before you run it: it "
           "changes the", "# images (kbrules itself changed nothing). It stops at the first "
           "command that fails.", "set -eu",
           "# File names are as qemu-img printed them, relative to where kbrules ran:",
           f"cd -- {shlex.quote(directory)}"]
    seen: set[tuple[str, ...]] = set()  # one checkpoint-delete serves every disk of a domain
    for source, report in results:
        out += ["", f"# == {show(source)}"]
        if isinstance(report, str):
            out.append(f"# not checked: {show(report)}")
            continue
        out += [f"# {line}" for line in _wrap(overall(report), "", "  ", SCRIPT_WIDTH)]
        steps = plan(report)
        if not steps:
            out.append("# nothing to repair")
        group: object = ()
        for step in steps:
            about = ("layer", step.layer) if step.bitmap is None else ("bitmap", step.bitmap)
            if about != group:
                group = about
                out += ["", f"# layer {step.layer}" if step.bitmap is None else f"# bitmap {_name(step.bitmap)}"]
            out += [f"# {line}" for line in textwrap.wrap(show(step.say), SCRIPT_WIDTH, break_long_words=False,
                                                          break_on_hyphens=False)]
            if step.command is not None and step.command not in seen:
                seen.add(step.command)
                out.append(" ".join(shlex.quote(word) for word in step.command))
    return "\n".join(out) + "\n"


def checkpoint_lines(report: Report) -> list[str]:
    """Which checkpoints an incremental backup of a libvirt disk can start from now."""
    if not report.checkpoints:
        return ["no checkpoints: libvirt can make only a full backup of this disk"]
    valid = {v.name: v for v in report.bitmaps}
    rows = [["CHECKPOINT", "USABLE", "WHY NOT"]]
    for c in report.checkpoints:
        errors = [f.rule for f in c.findings if f.severity == "error"]
        bitmap = valid.get(c.bitmap or "")
        if not c.usable and bitmap is not None and not bitmap.valid:
            errors.append(f"bitmap {bitmap.findings[0].rule}")
        why = "-" if c.usable else ", ".join(errors) or \
            ("leaves this disk out" if c.bitmap is None else "its bitmap is not checked")
        rows.append([_name(c.name, 40), "yes" if c.usable else "no", why])
    newest = report.newest_usable
    return ["checkpoints, oldest first:", *("  " + line for line in table(rows)),
            f"newest usable checkpoint: {_name(newest) if newest is not None else 'none'}"]


# HTML ---------------------------------------------------------------------------------------

# One stylesheet for the report page and the docs (engine/sphinxext.py ships it): the
# grid's classes all start with kb-, so that no theme's rule reaches them by accident.
# Colours are tints over the page's own background, readable in light and dark themes.
CSS = """\
.kb-grid { border-collapse: collapse; font-family: ui-monospace, SFMono-Regular, Menlo,
  Consolas, "DejaVu Sans Mono", monospace; font-size: 0.85em; margin: 0.5em 0; }
.kb-grid th, .kb-grid td { border: 1px solid rgba(128, 128, 128, 0.35);
  padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
.kb-grid thead th { font-weight: 600; }
.kb-grid th.kb-name { max-width: 14em; overflow-wrap: anywhere; }
.kb-grid td.kb-file { white-space: nowrap; }
.kb-grid .kb-recording, .kb-legend .kb-recording { background: rgba(40, 167, 69, 0.16); }
.kb-grid .kb-disabled, .kb-legend .kb-disabled { background: rgba(255, 193, 7, 0.28); }
.kb-grid .kb-in-use, .kb-legend .kb-in-use { background: rgba(220, 53, 69, 0.22); }
.kb-grid .kb-transient, .kb-legend .kb-transient { background: rgba(156, 39, 176, 0.18); }
.kb-grid .kb-busy, .kb-legend .kb-busy { background: rgba(23, 162, 184, 0.20); }
.kb-grid .kb-absent, .kb-legend .kb-absent { color: rgba(128, 128, 128, 0.9); text-align: center; }
.kb-grid .kb-mark { font-weight: 700; padding-left: 0.3em; }
.kb-grid .kb-error { color: #d32f2f; }
.kb-grid .kb-warning { color: #b26a00; }
.kb-grid .kb-info { color: #1565c0; }
.kb-grid td.kb-breaks { outline: 2px solid #d32f2f; outline-offset: -2px; }
.kb-grid tfoot td { font-weight: 600; border-top: 2px solid rgba(128, 128, 128, 0.6); }
.kb-grid td.kb-valid { color: #2e7d32; }
.kb-grid td.kb-invalid { color: #d32f2f; }
.kb-grid tr.kb-gap td { text-align: center; font-style: italic; }
.kb-scroll { overflow-x: auto; }
.kb-legend { font-size: 0.85em; margin: 0.2em 0 1em; }
.kb-legend > span { margin-right: 1.2em; display: inline-block; max-width: 100%; }
.kb-legend .kb-swatch { display: inline-block; width: 0.9em; height: 0.9em; margin: 0 0.3em 0 0;
  vertical-align: -0.1em; border: 1px solid rgba(128, 128, 128, 0.5); }
"""

PAGE_CSS = """\
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 0; padding: 1.5em; line-height: 1.5; color: #1f2328; background: #fff; }
@media (prefers-color-scheme: dark) { body { color: #e6edf3; background: #0d1117; } }
main { max-width: 60em; margin: 0 auto; }
h1 { font-size: 1.5em; margin: 0 0 0.2em; } h2 { font-size: 1.2em; margin: 1.5em 0 0.3em;
  overflow-wrap: anywhere; }
.meta { color: #6e7781; font-size: 0.9em; margin: 0; }
.verdict { font-weight: 600; }
.verdict.bad, .kb-sev-error { color: #d32f2f; } .kb-sev-warning { color: #b26a00; }
.kb-sev-info { color: #1565c0; }
table.bitmaps { border-collapse: collapse; font-size: 0.9em; }
table.bitmaps th, table.bitmaps td { border-bottom: 1px solid rgba(128, 128, 128, 0.3);
  padding: 0.2em 0.8em 0.2em 0; text-align: left; white-space: nowrap; }
table.bitmaps td.name { white-space: normal; overflow-wrap: anywhere; max-width: 30em; }
.finding { border-left: 4px solid rgba(128, 128, 128, 0.5); padding: 0.1em 0 0.1em 0.8em;
  margin: 0.8em 0; overflow-wrap: anywhere; }
.finding.error { border-color: #d32f2f; } .finding.warning { border-color: #b26a00; }
.finding.info { border-color: #1565c0; }
.finding p { margin: 0.2em 0; }
pre { background: rgba(128, 128, 128, 0.12); padding: 0.4em 0.6em; margin: 0.3em 0;
  white-space: pre-wrap; overflow-wrap: anywhere; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono",
  monospace; font-size: 0.9em; }
.error-line { color: #d32f2f; font-weight: 600; }
"""


def _e(text: str, width: int = 0) -> str:
    """Input text for HTML or SVG: shown (escaped invisibles) and escaped."""
    return html.escape(show(text, width), quote=True)


def grid_html(grid: Grid, caption: str = "") -> str:
    """The chain picture as an HTML table with a legend (classes kb-*, CSS above)."""
    glyph = GLYPHS[True]
    shown = view(grid)
    out = ['<div class="kb-picture"><div class="kb-scroll"><table class="kb-grid">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead><tr><th>layer</th><th>format</th><th>file</th>")
    for j in shown.columns:
        name = grid.columns[j].name
        out.append(f'<th class="kb-name" title="{_e(name)}">{_e(name, 80) or "&quot;&quot;"}</th>')
    out.append("</tr></thead><tbody>")
    span = 3 + len(shown.columns)

    def marks(items: Sequence[object]) -> str:
        return "".join(f'<span class="kb-mark kb-{m.severity}" title="{_e(m.rule)} ({m.severity})">'  # type: ignore[attr-defined]
                       f"{glyph[m.severity]}</span>" for m in items)  # type: ignore[attr-defined]

    for r in shown.rows:
        if isinstance(r, Gap):
            out.append(f'<tr class="kb-gap"><td colspan="{span}">{glyph["gap"]} '
                       f"{count(r.count, 'more layer')} ({r.first} to {r.last}), each like layer "
                       f"{r.first - 1}</td></tr>")
            continue
        row = grid.rows[r]
        out.append(f"<tr><th>{row.layer}{marks(row.marks)}</th><td>{_e(row.format)}</td>"
                   f'<td class="kb-file" title="{_e(row.filename)}">{_e(row.filename, 80)}</td>')
        for j in shown.columns:
            c = grid.cells[r][j]
            word = glyph["absent"] if c.state == "absent" else c.state
            breaks = " kb-breaks" if c.worst == "error" else ""
            out.append(f'<td class="kb-{c.state}{breaks}" title="{_e(grid.columns[j].name)}: '
                       f'{html.escape(STATE_DOC[c.state])}">{word}{marks(c.marks)}</td>')
        out.append("</tr>")
    out.append("</tbody>")
    if any(grid.columns[j].valid is not None for j in shown.columns):
        out.append('<tfoot><tr><td colspan="3">valid for a backup?</td>')
        for j in shown.columns:
            valid = grid.columns[j].valid
            out.append("<td></td>" if valid is None else
                       f'<td class="kb-{"valid" if valid else "invalid"}">{"valid" if valid else "NOT VALID"}</td>')
        out.append("</tr></tfoot>")
    out.append("</table></div>")
    if shown.hidden_columns:
        out.append(f'<p class="kb-legend">{count(shown.hidden_columns, "more bitmap")} not drawn</p>')
    legend = [f'<span><span class="kb-swatch kb-{s}"></span>{s}: {html.escape(STATE_DOC[s])}</span>'
              for s in grid.states()]
    legend += [f'<span><span class="kb-mark kb-{s}">{glyph[s]}</span> {MARK_DOC[s]}</span>'
               for s in grid.severities()]
    out.append(f'<p class="kb-legend">{"".join(legend)}</p></div>')
    return "".join(out)


def _finding_html(f: Finding, about: str) -> str:
    out = [f'<div class="finding {f.severity}"><p><strong class="kb-sev-{f.severity}">'
           f"{f.severity.upper()}</strong> <code>{html.escape(f.rule)}</code>{about}, "
           f"layer {f.layer} (<code>{_e(f.filename)}</code>)</p>",
           f"<p>{_e(f.message)}</p>"]
    prose: list[str] = []
    for piece, command in remediation_pieces(f.remediation, f.commands):
        if command:
            out.append(f"<p>fix: {' '.join(prose)}</p>" if prose else "")
            out.append(f"<pre>{_e(piece)}</pre>")
            prose = []
        else:
            prose.append(_e(piece))
    if prose:
        out.append(f"<p>{'fix: ' if len(out) == 2 else ''}{' '.join(prose)}</p>")
    if f.caveat:
        out.append(f"<p><em>note: {html.escape(f.caveat)}</em></p>")
    out.append("</div>")
    return "".join(out)


def report_html(report: Report) -> str:
    """One report as an HTML section body: verdict, picture, bitmaps, findings."""
    chain = report.chain
    invalid = sum(not v.valid for v in report.bitmaps)
    errors = sum(f.severity == "error" for f in report.findings)
    verdict = (f"{count(len(report.bitmaps), 'bitmap')} checked: {len(report.bitmaps) - invalid} valid, "
               f"{invalid} not valid")
    if report.findings:
        verdict += f"; {count(len(report.findings), 'chain finding')} ({count(errors, 'error')})"
    bad = " bad" if report.has_error else ""
    out = [f'<p class="verdict{bad}">{verdict}</p>',
           f"<p>Chain from {chain.source}, {count(len(chain.layers), 'layer')}, top first"
           + ("; one column per bitmap." if report.bitmaps else ".") + "</p>",
           grid_html(picture(report))]
    if not chain.complete:
        last = chain.layers[-1]
        out.append(f"<p>Incomplete: layer {last.layer} has the backing file "
                   f"<code>{_e(last.backing or '?')}</code>, which is not in the input.</p>")
    if report.bitmaps:
        out.append('<table class="bitmaps"><thead><tr><th>bitmap</th><th>valid</th>'
                   "<th>first failing rule</th><th>layer</th></tr></thead><tbody>")
        for v in report.bitmaps:
            first = first_error(v.findings)
            out.append(f'<tr><td class="name" title="{_e(v.name)}"><code>{_e(v.name, 80) or "&quot;&quot;"}</code></td>'
                       f"<td>{'yes' if v.valid else 'NO'}</td>"
                       f"<td>{html.escape(first.rule) if first else '-'}</td>"
                       f"<td>{first.layer if first else '-'}</td></tr>")
        out.append("</tbody></table>")
    findings = [(f, f", bitmap <code>{_e(v.name)}</code>") for v in report.bitmaps for f in v.findings]
    findings += [(f, "") for f in report.findings]
    if findings:
        out.append("<h3>Findings</h3>")
        out += [_finding_html(f, about) for f, about in findings]
    return "".join(out)


def page_html(results: Sequence[tuple[str, Union[Report, str]]], version: str) -> str:
    """A self-contained page (no script, no outside resource: its Content-Security-Policy
    forbids them) with one section per input: its report or its error."""
    title = "kbrules check: " + (show(results[0][0], 80) if len(results) == 1 else count(len(results), "input"))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
           'style-src \'unsafe-inline\'">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>\n{PAGE_CSS}{CSS}</style></head>",
           "<body><main>", "<h1>kbrules check</h1>",
           f'<p class="meta">kbrules {html.escape(version)}: is this qcow2 backing chain fit '
           "for an incremental backup?</p>"]
    for source, result in results:
        out.append(f"<section><h2><code>{_e(source)}</code></h2>")
        out.append(report_html(result) if isinstance(result, Report)
                   else f'<p class="error-line">error: {_e(result)}</p>')
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


# SVG ------------------------------------------------------------------------------------

CHAR = 7.8  # px per character of 13px monospace: layout by character count
ROW = 24  # px per row
SVG_FILL = {"recording": "#d4edda", "disabled": "#ffe8a1", "in-use": "#f5c6cb",
            "transient": "#e1bee7", "busy": "#bee5eb", "absent": "#ffffff"}
SVG_MARK = {"error": "#c62828", "warning": "#b26a00", "info": "#1565c0"}


def _svg_grid(grid: Grid, title: str, top: float) -> tuple[list[str], float, float]:
    """The elements of one picture, from y = `top`; its width and height."""
    glyph = GLYPHS[True]
    shown = view(grid)
    rows = shown.rows
    files = [show(grid.rows[r].filename, FILE_WIDTH) for r in rows if isinstance(r, int)]
    names = {j: _name(grid.columns[j].name, NAME_WIDTH) for j in shown.columns}
    label_w = [6 * CHAR + 16, max([6] + [cols(grid.rows[r].format) for r in rows if isinstance(r, int)]) * CHAR + 16,
               max([4] + [cols(f) for f in files]) * CHAR + 16]
    col_w = {j: max(cols(names[j]), 11) * CHAR + 16 for j in shown.columns}
    x0 = 10.0
    xs = [x0, x0 + label_w[0], x0 + label_w[0] + label_w[1]]
    x = xs[2] + label_w[2]
    col_x = {}
    for j in shown.columns:
        col_x[j] = x
        x += col_w[j]
    width = x + 10
    out = [f'<text x="{x0}" y="{top + 16}" class="t">{html.escape(title)}</text>']
    y = top + 28

    def text(tx: float, ty: float, body: str, cls: str = "", extra: str = "") -> str:
        c = f' class="{cls}"' if cls else ""
        return f'<text x="{tx + 8:.1f}" y="{ty + 16:.1f}"{c}{extra}>{body}</text>'

    for label, lx in zip(("layer", "format", "file"), xs):
        out.append(text(lx, y, label, "h"))
    for j in shown.columns:
        out.append(f'<g><title>{_e(grid.columns[j].name)}</title>{text(col_x[j], y, html.escape(names[j]), "h")}</g>')
    y += ROW
    out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x:.1f}" y2="{y:.1f}" class="rule"/>')
    for r in rows:
        if isinstance(r, Gap):
            out.append(text(x0, y, f"{glyph['gap']} {count(r.count, 'more layer')} ({r.first} to {r.last}), "
                                   f"each like layer {r.first - 1}", "gap"))
            y += ROW
            continue
        row = grid.rows[r]
        mark = f" {glyph[row.worst]}" if row.worst else ""
        out.append(text(xs[0], y, f"{row.layer}{mark}"))
        out.append(text(xs[1], y, _e(row.format)))
        out.append(f"<g><title>{_e(row.filename)}</title>{text(xs[2], y, _e(row.filename, FILE_WIDTH))}</g>")
        for j in shown.columns:
            c = grid.cells[r][j]
            stroke = f' stroke="{SVG_MARK["error"]}" stroke-width="2"' if c.worst == "error" else ' stroke="#bbb"'
            out.append(f'<rect x="{col_x[j] + 2:.1f}" y="{y + 2:.1f}" width="{col_w[j] - 4:.1f}" '
                       f'height="{ROW - 4}" rx="3" fill="{SVG_FILL[c.state]}"{stroke}/>')
            word = glyph["absent"] if c.state == "absent" else c.state
            body = word + (f' <tspan fill="{SVG_MARK[c.worst]}" font-weight="bold">{glyph[c.worst]}</tspan>'
                           if c.worst else "")
            tip = f"{_e(grid.columns[j].name)} in layer {row.layer}: {c.state}" + "".join(
                f"; breaks {_e(m.rule)} ({m.severity})" for m in c.marks)
            out.append(f"<g><title>{tip}</title>{text(col_x[j], y, body)}</g>")
        y += ROW
    if any(grid.columns[j].valid is not None for j in shown.columns):
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x:.1f}" y2="{y:.1f}" class="rule"/>')
        out.append(text(xs[0], y, "valid for a backup?", "h"))
        for j in shown.columns:
            valid = grid.columns[j].valid
            if valid is not None:
                colour = "#2e7d32" if valid else SVG_MARK["error"]
                out.append(text(col_x[j], y, "valid" if valid else "NOT VALID", "h", f' style="fill: {colour}"'))
        y += ROW
    lx = x0 + 8
    for state in grid.states():
        label = f"{glyph['absent']} no copy" if state == "absent" else state
        out.append(f'<rect x="{lx:.1f}" y="{y + 9:.1f}" width="12" height="12" rx="2" '
                   f'fill="{SVG_FILL[state]}" stroke="#999"/>')
        out.append(f'<text x="{lx + 16:.1f}" y="{y + 20:.1f}" class="legend">{label}</text>')
        lx += 16 + (len(label) + 3) * CHAR
    for severity in grid.severities():
        label = f"{glyph[severity]} {MARK_DOC[severity]}"
        out.append(f'<text x="{lx:.1f}" y="{y + 20:.1f}" class="legend">{label}</text>')
        lx += (len(label) + 3) * CHAR
    if shown.hidden_columns:
        label = f"{count(shown.hidden_columns, 'more bitmap')} not drawn"
        out.append(f'<text x="{lx:.1f}" y="{y + 20:.1f}" class="legend">{label}</text>')
        lx += (len(label) + 3) * CHAR
    width = max(width, lx + 10, x0 + cols(title) * CHAR + 20)
    y += ROW + 8
    return out, width, y - top


def page_svg(results: Sequence[tuple[str, Union[Report, str]]]) -> str:
    """One SVG image: each input's chain picture, one under the other (an input that
    failed: its error line). No script, no link, no outside font."""
    body: list[str] = []
    width, y = 320.0, 0.0
    for source, result in results:
        if isinstance(result, Report):
            chain = result.chain
            title = (f"{show(source, 60)}: {count(len(chain.layers), 'layer')} from {chain.source}, "
                     f"{count(len(result.bitmaps), 'bitmap')}, "
                     f"{sum(not v.valid for v in result.bitmaps)} not valid")
            parts, w, h = _svg_grid(picture(result), title, y)
        else:
            line = f"{show(source, 60)}: error: {show(result, 200)}"
            parts, w, h = [f'<text x="10" y="{y + 16}" class="t err">{html.escape(line)}</text>'], \
                cols(line) * CHAR + 20, 32.0
        body += parts
        width, y = max(width, w), y + h
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{y:.0f}" '
            f'viewBox="0 0 {width:.0f} {y:.0f}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
            'font-size="13">')
    style = ("<style>text { fill: #1f2328; white-space: pre; } .t { font-weight: bold; } "
             ".h { font-weight: bold; } .gap { font-style: italic; } .legend { fill: #555; } "
             ".err { fill: #c62828; } .rule { stroke: #888; }</style>")
    background = f'<rect width="{width:.0f}" height="{y:.0f}" fill="#ffffff"/>'
    return "\n".join([head, style, background, *body, "</svg>"]) + "\n"


def explain_picture(report: Report, style: Style = PLAIN) -> list[str]:
    """An example's chain for kbrules explain: the picture alone."""
    return grid_text(picture(report), style, indent="       ")
