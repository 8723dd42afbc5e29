"""The command line: kbrules check. I/O lives here; everything it calls is pure."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from . import __version__
from .errors import InputError, KbrulesError, UsageError
from .evaluate import evaluate
from .model import Chain
from .normalize import normalize, parse_json
from .qemu import read_image
from .report import to_json, to_text
from .rules import load_all

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
QCOW2_MAGIC = b"QFI\xfb"

DESCRIPTION = """\
Is this qcow2 backing chain fit for an incremental backup from bitmap X? kbrules
checks the chain against the rules of libvirt's incremental-backup article (libvirt
6.5 and later) and says which rule failed, in which layer, and what to do next."""

CHECK_EPILOG = """\
input (detected automatically):
  IMAGE           a disk image: kbrules runs qemu-img info --backing-chain on it
  FILE.json | -   qemu-img info --output=json [--backing-chain] output, or QMP
                  query-named-block-nodes (bare array or {"return": [...]})

examples:
  kbrules check top.qcow2 --bitmap backup-1
  qemu-img info --output=json --backing-chain top.qcow2 | kbrules check - --format json
  virsh qemu-monitor-command vm1 '{"execute":"query-named-block-nodes",
      "arguments":{"flat":true}}' | kbrules check - --top libvirt-1-format

exit status: 0 no error finding, 1 at least one error finding (a bitmap is not
valid), 2 the input, the command line or qemu-img failed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block.
        raise UsageError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    top = _Parser(prog="kbrules", description=DESCRIPTION,
                  formatter_class=argparse.RawDescriptionHelpFormatter,
                  epilog="Run 'kbrules check --help' for the checker's options.")
    top.add_argument("--version", action="version", version=f"kbrules {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = sub.add_parser(
        "check", help="check a chain's bitmaps", description=DESCRIPTION, epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("input", nargs="?", metavar="PATH|-",
                       help="disk image, JSON file, or - for standard input (the default "
                            "when input is piped)")
    check.add_argument("--bitmap", "-b", action="append", metavar="NAME", dest="bitmaps",
                       help="check this bitmap (repeatable); default: every bitmap in the chain")
    check.add_argument("--format", choices=("text", "json"), default="text",
                       help="report format (default: text)")
    check.add_argument("--top", metavar="NODE",
                       help="QMP input: the node-name of the disk's top format node, when the "
                            "data holds several disks")
    check.add_argument("--force-share", "-U", action="store_true",
                       help="read an image that a running VM holds (qemu-img -U); in-use flags of "
                            "layers open read-write are then not meaningful")
    check.add_argument("--image-format", "-f", metavar="FMT",
                       help="format of the image PATH (qemu-img -f); also forces PATH to be "
                            "read as an image")
    return top


def _is_json_file(path: Path) -> bool:
    """A JSON file, not a disk image: qcow2 images start with a magic number, and raw
    images with NUL bytes, which JSON text never holds."""
    if path.suffix.lower() == ".json":
        return True
    with path.open("rb") as f:
        head = f.read(4096)
    return not head.startswith(QCOW2_MAGIC) and b"\0" not in head


def _read_chain(args: argparse.Namespace) -> tuple[Chain, list[str]]:
    source = args.input
    if source is None:
        if sys.stdin.isatty():
            raise UsageError("nothing to check: give an image, a JSON file, "
                             "or - to read JSON from standard input")
        source = "-"
    if source == "-":
        if args.image_format:
            raise UsageError("--image-format needs an image path, not -")
        return normalize(parse_json(sys.stdin.buffer.read(), "<stdin>"), "<stdin>", args.top), []
    path = Path(source)
    try:
        if path.is_dir():
            raise InputError(f"{source}: is a directory; expected a disk image or a JSON file")
        if not path.exists():
            raise InputError(f"{source}: no such file")
        if args.image_format or not _is_json_file(path):
            if args.top:
                raise UsageError("--top applies to QMP input, not to an image")
            return read_image(source, args.image_format, args.force_share)
        data = path.read_bytes()
    except PermissionError:
        raise InputError(f"{source}: permission denied") from None
    except OSError as e:
        raise InputError(f"{source}: cannot read: {e.strerror or e}") from None
    return normalize(parse_json(data, source), source, args.top), []


def check(args: argparse.Namespace) -> int:
    rules = load_all()
    chain, warnings = _read_chain(args)
    for warning in warnings:
        print(f"kbrules: qemu-img: {warning}", file=sys.stderr)
    report = evaluate(chain, rules, args.bitmaps)
    print(to_json(report) if args.format == "json" else to_text(report))
    return EXIT_FINDINGS if report.has_error else EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            _parser().print_help()
            return EXIT_ERROR
        return check(args)
    except KbrulesError as e:
        print(f"kbrules: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. | head): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
