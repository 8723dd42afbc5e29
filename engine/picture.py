"""The chain as a picture: one row per layer (top first), one column per checked
bitmap, each cell the state of that layer's copy and the rules it breaks there. A
healthy bitmap is a column of "recording" cells from the top down, with no mark.

`picture()` computes the grid from a report, once and without I/O; engine.draw draws
it as text, HTML or SVG, and the docs draw it from an example's JSON. The grid is
generic (rows x columns of cells, each with a state and marks), so other kinds of
columns and notes can be added without touching the renderers' layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from .model import SEVERITIES, Bitmap, Finding, Report

# A copy's state, most telling first: a copy that is both disabled and in-use shows
# as in-use. "absent": the layer holds no bitmap of that name.
STATES = ("in-use", "transient", "disabled", "busy", "recording", "absent")
STATE_DOC = {
    "recording": "enabled: records every write (qemu-img flag auto)",
    "disabled": "not recording (no flag auto)",
    "in-use": "inconsistent: left in-use by a writer that did not close the image",
    "transient": "not persistent: lost when QEMU stops (QMP only)",
    "busy": "used by a block job right now (QMP only)",
    "absent": "no copy of this bitmap in this layer",
}


@dataclass(frozen=True)
class Mark:
    """A finding at a cell or a row: the rule it breaks there."""

    rule: str
    severity: str


def _worst(marks: tuple[Mark, ...]) -> Optional[str]:
    return marks[0].severity if marks else None  # marks come most severe first


@dataclass(frozen=True)
class Cell:
    state: str  # one of STATES
    marks: tuple[Mark, ...] = ()  # most severe first

    @property
    def worst(self) -> Optional[str]:
        return _worst(self.marks)


@dataclass(frozen=True)
class Row:
    """A layer of the chain; `marks` are findings about the layer itself."""

    layer: int
    filename: str
    format: str
    marks: tuple[Mark, ...] = ()

    @property
    def worst(self) -> Optional[str]:
        return _worst(self.marks)


@dataclass(frozen=True)
class Column:
    name: str
    valid: Optional[bool]  # the column's verdict, None when it has none
    kind: str = "bitmap"


@dataclass(frozen=True)
class Grid:
    source: str  # where the chain came from: "qemu-img" or "qmp"
    rows: tuple[Row, ...]  # top first
    columns: tuple[Column, ...]
    cells: tuple[tuple[Cell, ...], ...]  # cells[row][column]
    complete: bool  # the chain reaches its base

    def states(self) -> list[str]:
        """The states that occur, in STATES order (what a legend needs)."""
        seen = {c.state for row in self.cells for c in row}
        return [s for s in STATES if s in seen]

    def severities(self) -> list[str]:
        """The severities of the marks that occur, most severe first."""
        seen = {m.severity for row in self.cells for c in row for m in c.marks}
        seen |= {m.severity for r in self.rows for m in r.marks}
        return [s for s in SEVERITIES if s in seen]


def state_of(bitmap: Optional[Bitmap]) -> str:
    if bitmap is None:
        return "absent"
    if bitmap.inconsistent:
        return "in-use"
    if not bitmap.persistent:
        return "transient"
    if not bitmap.recording:
        return "disabled"
    return "busy" if bitmap.busy else "recording"


def _marks(findings: list[Finding]) -> tuple[Mark, ...]:
    unique = dict.fromkeys(Mark(f.rule, f.severity) for f in findings)
    return tuple(sorted(unique, key=lambda m: SEVERITIES.index(m.severity)))


def picture(report: Report) -> Grid:
    """The grid of a report: its layers x its checked bitmaps."""
    layers = report.chain.layers
    rows = tuple(Row(l.layer, l.filename, l.format,
                     _marks([f for f in report.findings if f.layer == l.layer]))
                 for l in layers)
    columns = tuple(Column(v.name, v.valid) for v in report.bitmaps)
    cells = []
    for layer in layers:
        by_name: dict[str, Bitmap] = {}
        for bitmap in layer.bitmaps:
            by_name.setdefault(bitmap.name, bitmap)
        cells.append(tuple(
            Cell(state_of(by_name.get(v.name)),
                 _marks([f for f in v.findings if f.layer == layer.layer]))
            for v in report.bitmaps))
    return Grid(report.chain.source, rows, columns, tuple(cells), report.chain.complete)


# What to draw when the grid is too big ------------------------------------------------

@dataclass(frozen=True)
class Gap:
    """Rows left out of a drawing: layers first..last, none of them with a mark."""

    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class View:
    rows: tuple[Union[int, Gap], ...]  # row indexes, and gaps where rows were left out
    columns: tuple[int, ...]  # column indexes, in the grid's order
    hidden_columns: int  # columns left out (all of them valid, when any was kept)


MAX_ROWS = 24
MAX_COLUMNS = 48


def view(grid: Grid, max_rows: int = MAX_ROWS, max_columns: int = MAX_COLUMNS) -> View:
    """Which rows and columns to draw. Never leaves out a marked cell's row, the top,
    the base, or a row where some column changes state (where a run starts or ends);
    runs of rows between those become gaps. Columns beyond `max_columns` are left out,
    valid ones first, and counted."""
    n = len(grid.rows)
    if n <= max_rows:
        rows: tuple[Union[int, Gap], ...] = tuple(range(n))
    else:
        keep = {0, n - 1}
        for i in range(n):
            if grid.rows[i].marks or any(c.marks for c in grid.cells[i]):
                keep.add(i)
            if i and any(a.state != b.state for a, b in zip(grid.cells[i - 1], grid.cells[i])):
                keep |= {i - 1, i}
        out: list[Union[int, Gap]] = []
        last = -1
        for i in sorted(keep):
            if i - last == 2:  # a gap of one row: just draw the row
                out.append(i - 1)
            elif i - last > 2:
                out.append(Gap(last + 1, i - 1))
            out.append(i)
            last = i
        rows = tuple(out)
    order = sorted(range(len(grid.columns)), key=lambda j: grid.columns[j].valid is not False)
    shown = sorted(order[:max_columns])
    return View(rows, tuple(shown), len(grid.columns) - len(shown))
