"""The command line: kbrules check, jq, test, list, explain. I/O lives here; what it
calls is pure, but for engine.qemu (which runs qemu-img)."""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence, Union

from . import __version__, jqbackend, libvirt
from .errors import KbrulesError, UsageError
from .evaluate import evaluate
from .examples import ENGINES, check_example
from .formats import FORMATS, Output, Result, write_text
from .inputs import STDIN, Input, Raw, read_input, read_raw
from .loader import load_rules
from .report import explanation
from .rule import Rule
from .text import count, show, table

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

DESCRIPTION = """\
Is this qcow2 backing chain fit for an incremental backup from bitmap X? kbrules
checks the chain against the rules of libvirt's incremental-backup article (libvirt
6.5 and later) and says which rule failed, in which layer, and what to do next."""

EXIT_STATUS = """\
exit status: 0 no error finding, 1 at least one error finding (a bitmap is not
valid), 2 the input, the command line or qemu-img failed."""

CHECK_EPILOG = """\
input (detected automatically):
  IMAGE           a disk image: kbrules runs qemu-img info --backing-chain on it
  FILE.json | -   qemu-img info --output=json [--backing-chain] output, or QMP
                  query-named-block-nodes (bare array or {"return": [...]})
  --domain NAME   every disk of a libvirt domain, and its checkpoints (virsh)

examples:
  kbrules check top.qcow2 --bitmap backup-1
  qemu-img info --output=json --backing-chain top.qcow2 | kbrules check - --format json
  virsh qemu-monitor-command vm1 '{"execute":"query-named-block-nodes",
      "arguments":{"flat":true}}' | kbrules check - --top libvirt-1-format
  kbrules check top.qcow2 --bitmap=-odd-name     (a name starting with '-')
  kbrules check --domain vm1 --format json       (one report per disk)

""" + EXIT_STATUS


JQ_EPILOG = """\
examples:
  kbrules jq > check.jq
  qemu-img info --output=json --backing-chain top.qcow2 | jq -f check.jq
  jq -f check.jq chain.json --args -- daily weekly   (only these bitmaps)
  jq -f check.jq qmp.json --arg top libvirt-1-format (QMP data of several disks)
  jq -f check.jq chain.json | jq -e .ok             (exit 0 when check would)
  kbrules jq --module > kbrules.jq
  jq -L . 'include "kbrules"; kbrules_report | .bitmaps[].name' chain.json

Put the input file before --args: every word after it is a bitmap name ('--'
keeps a name that starts with '-' from being read as an option). Bad input gets
check's own one line on stderr and exit status 2. In the source tree (and the
installed package), rules/check.jq and rules/kbrules.jq are these two, with
every shipped rules file."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block.
        if "--bitmap" in message and "expected one argument" in message:
            message += " (for a name starting with '-', write --bitmap=NAME)"
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; the docs' CLI reference is generated from it."""
    top = _Parser(prog="kbrules", description=DESCRIPTION,
                  formatter_class=argparse.RawDescriptionHelpFormatter,
                  epilog="commands:\n  kbrules check --help    the checker's inputs and options\n"
                         "  kbrules jq --help       the same checks as a jq program\n\n" + EXIT_STATUS)
    top.add_argument("--version", action="version", version=f"kbrules {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = sub.add_parser(
        "check", help="check a chain's bitmaps", description=DESCRIPTION, epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("inputs", nargs="*", metavar="PATH|-",
                       help="disk images or JSON files, or - for standard input (the default "
                            "when input is piped); several are checked in one run")
    check.add_argument("--bitmap", "-b", action="append", metavar="NAME", dest="bitmaps",
                       help="check this bitmap (repeatable); default: every bitmap in the chain")
    check.add_argument("--format", choices=tuple(FORMATS), default="text",
                       help="report format (default: text): " + "; ".join(
                           f"{name}: {output.help}" for name, output in FORMATS.items()))
    check.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, metavar="N",
                       help="run up to N qemu-img at once (default: the number of CPUs)")
    check.add_argument("--top", metavar="NODE",
                       help="QMP input: the node-name of the disk's top format node, when the "
                            "data holds several disks")
    check.add_argument("--force-share", "-U", action="store_true",
                       help="read an image that a running VM holds (qemu-img -U); in-use flags of "
                            "layers open read-write are then not meaningful")
    check.add_argument("--image-format", "-f", metavar="FMT",
                       help="format of the image PATH (qemu-img -f); also forces PATH to be "
                            "read as an image")
    check.add_argument("--domain", "-d", action="append", metavar="NAME", dest="domains", default=[],
                       help="check every disk of this libvirt domain (repeatable): a running one "
                            "live over QMP, a shut-off one with qemu-img, and its checkpoints")
    check.add_argument("--all-domains", action="store_true",
                       help="check every disk of every domain libvirt knows")
    check.add_argument("--disk", action="append", metavar="TARGET", dest="disks", default=[],
                       help="with --domain: only this disk (vda...; repeatable)")
    check.add_argument("--connect", "-c", metavar="URI",
                       help="with --domain: the libvirt connection (virsh -c URI)")
    check.add_argument("--engine", choices=("python", "jq"), default="python",
                       help="evaluate with the Python engine (default) or run the compiled jq "
                            "program through libjq; both give the same report")
    _rule_options(check)
    jq = sub.add_parser(
        "jq", help="print the rules as one jq program", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print a self-contained jq program that reads the same input as kbrules "
                    "check, refuses the same bad input, and prints the same JSON report as "
                    "kbrules check --format json.",
        epilog=JQ_EPILOG)
    _rule_options(jq)
    jq.add_argument("--module", action="store_true",
                    help="print it as a jq module (definitions only) for include or import: "
                         "kbrules_report, kbrules_entry")
    test = sub.add_parser(
        "test", help="run every rule's own examples in both engines",
        description="Run each rule's pass and fail examples through the Python engine and the "
                    "jq program (libjq), like conftest verify. Exit 0 when all pass, 1 otherwise.")
    test.add_argument("files", nargs="*", metavar="RULES.yaml",
                      help="rule files to test (default: every shipped rules file)")
    listing = sub.add_parser("list", help="list the rules: id, severity, title, article")
    _rule_options(listing)
    explain = sub.add_parser("explain", help="a rule's statement, remediation and examples")
    explain.add_argument("rule", metavar="ID", help="a rule id (see kbrules list)")
    explain.add_argument("--rules", action="append", type=Path, metavar="FILE",
                         help="look in this rules file (repeatable; default: every shipped file)")
    return top


def _ids(text: str) -> list[str]:
    return [i for i in text.split(",") if i]


def _rule_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", action="append", type=Path, metavar="FILE",
                        help="use this rules file (repeatable; default: every shipped file)")
    # One value per option (repeatable, or comma-separated): a list of values after
    # the option would swallow the input paths that follow it.
    parser.add_argument("--select", action="extend", type=_ids, metavar="ID[,ID...]", default=[],
                        help="only these rules (repeatable)")
    parser.add_argument("--ignore", action="extend", type=_ids, metavar="ID[,ID...]", default=[],
                        help="all rules but these (repeatable)")


def _rules(args: argparse.Namespace) -> list[Rule]:
    """The rules a command runs: --rules files (or all), narrowed by --select/--ignore."""
    return load_rules(args.rules, args.select, args.ignore)


def check(args: argparse.Namespace) -> int:
    rules = _rules(args)
    output_format = FORMATS[args.format]
    if args.engine == "jq":
        if not output_format.json:
            raise UsageError("--engine jq prints the JSON report: add --format json or jsonl")
        if args.force_share:
            raise UsageError("--force-share needs the Python engine: jq cannot probe which "
                             "layers are held")
    if args.jobs < 1:
        raise UsageError("--jobs must be 1 or more")
    program = jqbackend.binding(rules) if args.engine == "jq" else None  # compiled once
    if args.domains or args.all_domains:
        return _check_domains(args, rules, program, output_format(batch=True))
    if args.disks:
        raise UsageError("--disk picks disks of a --domain")
    sources = args.inputs
    if not sources:
        if sys.stdin.isatty():
            raise UsageError("nothing to check: give an image, a JSON file, "
                             "or - to read JSON from standard input")
        sources = [STDIN]
    if sources.count(STDIN) > 1:
        raise UsageError("standard input (-) can be read only once")
    output = output_format(batch=len(sources) > 1 or output_format.named)
    if not output.batch:
        result = _check_one(sources[0], args, rules, program)  # errors: one line, exit 2
        output.add(result)
        return result.code

    def one(source: str) -> list[Result]:
        try:
            return [_check_one(source, args, rules, program)]
        except KbrulesError as e:
            return [Result(source, EXIT_ERROR, error=show(str(e)))]

    return _check_many(one, sources, args.jobs, output)


def _check_one(source: str, args: argparse.Namespace, rules: list[Rule], program: Any) -> Result:
    """One input's result; `program` is the compiled jq program for --engine jq."""
    if program is not None:
        # jq takes the value as read: it refuses bad input itself, in check's words.
        return _judge(read_raw(source, top=args.top, image_format=args.image_format), args, rules, program)
    read = read_input(source, top=args.top, image_format=args.image_format,
                      force_share=args.force_share)
    return _judge(read, args, rules, program)


def _judge(read: Union[Input, Raw], args: argparse.Namespace, rules: list[Rule], program: Any) -> Result:
    _warn(read.warnings)
    if program is not None:
        data = jqbackend.run(program, read.value, args.bitmaps, args.top, read.context, where=read.name)
        return Result(read.name, EXIT_OK if data["ok"] else EXIT_FINDINGS, data)
    assert isinstance(read, Input)
    report = evaluate(read.chain, rules, args.bitmaps)
    return Result(read.name, EXIT_FINDINGS if report.has_error else EXIT_OK, report)


def _check_domains(args: argparse.Namespace, rules: list[Rule], program: Any, output: Output) -> int:
    """Every disk of each domain asked for: one result per disk, in the domains' order."""
    if args.inputs or args.top or args.image_format or args.force_share:
        raise UsageError("--domain and --all-domains read the domains' own disks: give no PATH, "
                         "--top, --image-format or --force-share with them")
    names = libvirt.all_domains(args.connect) if args.all_domains else list(dict.fromkeys(args.domains))

    def one(name: str) -> list[Result]:
        try:
            disks = libvirt.read_domain(name, args.connect, args.disks or ())
        except KbrulesError as e:
            return [Result(name, EXIT_ERROR, error=show(str(e)))]
        out = []
        for disk in disks:
            if disk.input is not None:
                try:
                    out.append(_judge(disk.input, args, rules, program))
                except KbrulesError as e:
                    out.append(Result(disk.name, EXIT_ERROR, error=show(str(e))))
            else:
                out.append(Result(disk.name, EXIT_ERROR if disk.error else EXIT_OK,
                                  error=disk.error and show(disk.error), skipped=disk.skipped))
        return out

    return _check_many(one, names, args.jobs, output)


def _check_many(one: Callable[[str], list[Result]], items: list[str], workers: int,
                output: Output) -> int:
    """Several inputs in one run: `one` checks each item (an input, or a domain's
    disks) in a thread of its own (qemu-img and virsh are other processes, so the GIL
    does not matter), results print in the items' order, and the exit code is the
    worst of all. A bad input is reported and the others still run."""
    worst = EXIT_OK
    progress = _Progress(len(items))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        for results in pool.map(one, items):
            progress.step()
            for result in results:
                worst = max(worst, result.code)
                if result.error is not None:
                    print(f"kbrules: {result.error}", file=sys.stderr)
                progress.clear()
                output.add(result)
    progress.clear()
    output.end()
    return worst


class _Progress:
    """'checked N/M' on stderr, only for a person watching a long run."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.shown = total, 0, False
        self.on = total >= 20 and sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if self.on and (self.done % 10 == 0 or self.done == self.total):
            print(f"\rkbrules: checked {self.done}/{self.total}", end="", file=sys.stderr, flush=True)
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self.shown = False


def _warn(warnings: Sequence[str]) -> None:
    for warning in warnings:
        print(f"kbrules: qemu-img said: {show(warning.removeprefix('qemu-img: '))}", file=sys.stderr)


def jq_program(args: argparse.Namespace) -> int:
    # With the shipped rules: exactly the committed rules/check.jq or rules/kbrules.jq.
    rules = _rules(args)
    text = jqbackend.module_file(rules) if args.module else jqbackend.program_file(rules)
    write_text(text.rstrip("\n"))
    return EXIT_OK


def test_rules(args: argparse.Namespace) -> int:
    """kbrules test: every example of every rule, in both engines."""
    rules = load_rules(args.files or None, examples=False)  # they are what is tested
    runs = failed = 0
    source = None
    for rule in rules:
        if rule.source != source:
            source = rule.source
            print(source)
        problems = [p for n, e in enumerate(rule.examples, 1) for engine in ENGINES
                    if (p := check_example(rule, e, n, engine))]
        runs += len(rule.examples) * len(ENGINES)
        failed += len(problems)
        print(f"  {'FAIL' if problems else 'ok  '}  {rule.id}  "
              f"({len(rule.examples)} examples x {', '.join(ENGINES)})")
        for problem in problems:
            print(f"        {show(problem)}")
    print(f"{count(len(rules), 'rule')}, {runs} runs: {runs - failed} passed, {failed} failed")
    return EXIT_FINDINGS if failed else EXIT_OK


def list_rules(args: argparse.Namespace) -> int:
    rows = [["ID", "SEVERITY", "TITLE", "ARTICLE"]] + [
        [r.id, r.severity, r.title, f"docs/kbase/{r.article}.rst"] for r in _rules(args)]
    write_text("\n".join(table(rows)))
    return EXIT_OK


def explain(args: argparse.Namespace) -> int:
    rules = {r.id: r for r in load_rules(args.rules)}
    rule = rules.get(args.rule)
    if rule is None:
        raise UsageError(f"unknown rule id {args.rule!r} (known: {', '.join(rules)})")
    write_text(explanation(rule))
    return EXIT_OK


COMMANDS = {"check": check, "jq": jq_program, "test": test_rules, "list": list_rules,
            "explain": explain}


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("no command given: try kbrules check PATH (see kbrules --help)")
        return COMMANDS[args.command](args)
    except KbrulesError as e:
        # One line whatever the input held: control characters in paths or names are escaped.
        print(f"kbrules: {show(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. | head): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
