"""The command line: kbrules check, jq, test, list, explain. I/O lives here; what it
calls is pure, but for engine.qemu (which runs qemu-img)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Optional, Sequence, Union

from . import qemu
from .errors import Interrupted, KbrulesError, ReaderGone, UsageError
from .evaluate import evaluate
from .formats import FORMATS, Output, Result, say, terminal_style, to_file, write_text
from .inputs import MAX_JSON, STDIN, Input, Raw, read_input, read_raw
from .loader import load_rules
from .report import explanation
from .rule import Rule
from .text import count, show, table

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
EXIT_PIPE = 128 + int(signal.SIGPIPE)  # the reader went away: what a shell shows for `yes | head -1`

DESCRIPTION = """\
Is this qcow2 backing chain fit for an incremental backup from bitmap X? kbrules
checks the chain against the rules of libvirt's incremental-backup article (libvirt
6.5 and later) and says which rule failed, in which layer, and what to do next."""

EXIT_STATUS = """\
exit status: 0 no error finding, 1 at least one error finding (a bitmap is not
valid), 2 the input, the command line, qemu-img or the output failed; 130 and 143
interrupted (SIGINT, SIGTERM); 141 the reader of the output went away (| head)."""

CHECK_EPILOG = """\
input (by its name, never by its content):
  IMAGE           any other path is a disk image: kbrules inspects its headers, then
                  runs qemu-img info on it (README: Security)
  FILE.json | -   qemu-img info --output=json [--backing-chain] output, or QMP
                  query-named-block-nodes (bare array or {"return": [...]}); --json
                  reads every PATH as JSON
  --domain NAME   every disk of a libvirt domain, and its checkpoints (virsh)

examples:
  kbrules check top.qcow2 --bitmap backup-1
  qemu-img info --output=json --backing-chain top.qcow2 \\
      | kbrules check - --format json
  kbrules check top.qcow2 --format html > report.html   (to open in a browser)
  virsh qemu-monitor-command vm1 '{"execute":"query-named-block-nodes",
      "arguments":{"flat":true}}' | kbrules check - --top libvirt-1-format
  kbrules check top.qcow2 --bitmap=-odd-name     (a name starting with '-')
  kbrules check --domain vm1 --format json       (one report per disk)

""" + EXIT_STATUS


PLAN_EPILOG = """\
examples:
  kbrules plan top.qcow2 > plan.sh && less plan.sh && sh plan.sh
  kbrules plan --domain vm1   (libvirt's own commands: virsh checkpoint-delete...)

exit status: as kbrules check: 0 nothing to repair, 1 the script has steps, 2 broken."""


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
    def _print_message(self, message: str, file: Any = None) -> None:
        # --help and --version through the one writer: a full or closed stdout is exit 2.
        if message and file in (None, sys.stdout):
            write_text(message.rstrip("\n"))
        else:
            super()._print_message(message, file)

    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block.
        if "--bitmap" in message and "expected one argument" in message:
            message += " (for a name starting with '-', write --bitmap=NAME)"
        raise UsageError(f"{message} (see {self.prog} --help)")


class _Version(argparse.Action):
    """--version, looked up only when asked (see engine/__init__.py)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> NoReturn:
        from . import __version__

        write_text(f"kbrules {__version__}")  # the one writer: a full or closed stdout is exit 2
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; the docs' CLI reference is generated from it."""
    top = _Parser(prog="kbrules", description=DESCRIPTION,
                  formatter_class=argparse.RawDescriptionHelpFormatter,
                  epilog="commands:\n  kbrules check --help    the checker's inputs and options\n"
                         "  kbrules plan --help     the repair plan as a shell script\n"
                         "  kbrules jq --help       the same checks as a jq program\n\n" + EXIT_STATUS)
    top.add_argument("--version", action=_Version, nargs=0, help="show program's version number and exit")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = sub.add_parser(
        "check", help="check a chain's bitmaps", description=DESCRIPTION, epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _check_options(check)
    check.add_argument("--format", choices=tuple(FORMATS), default="text",
                       help="report format (default: text): " + "; ".join(
                           f"{name}: {output.help}" for name, output in FORMATS.items()))
    plan = sub.add_parser(
        "plan", help="print the repair plan as a shell script", epilog=PLAN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check as kbrules check does, and print the repair plan as a POSIX shell "
                    "script: for each bitmap that is not valid, every step that brings the chain "
                    "back to health without losing anything else, commented. kbrules changes "
                    "nothing itself: read the script, then run it (sh plan.sh).")
    _check_options(plan)
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


def _check_options(parser: argparse.ArgumentParser) -> None:
    """The inputs and options that kbrules check and kbrules plan share."""
    parser.add_argument("inputs", nargs="*", metavar="PATH|-",
                        help="disk images or JSON files, or - for standard input (the default "
                             "when input is piped); several are checked in one run")
    parser.add_argument("--bitmap", "-b", action="append", metavar="NAME", dest="bitmaps",
                        help="check this bitmap (repeatable); default: every bitmap in the chain")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write the report to FILE instead of standard output, atomically "
                             "(a temporary file in FILE's directory, renamed over FILE at the end), "
                             "as node_exporter's textfile collector needs; a run that stops on an "
                             "error leaves FILE as it was")
    parser.add_argument("--jobs", "-j", type=int, default=2 * (os.cpu_count() or 1), metavar="N",
                        help="check up to N inputs or domains at once, each with its qemu-img or "
                             "virsh (default: twice the number of CPUs, so that kbrules' own work "
                             "between two runs leaves no CPU idle)")
    parser.add_argument("--top", metavar="NODE",
                        help="QMP input: the node-name of the disk's top format node, when the "
                             "data holds several disks")
    parser.add_argument("--force-share", "-U", action="store_true",
                        help="read an image that a running VM holds (qemu-img -U); in-use flags of "
                             "layers open read-write are then not meaningful")
    parser.add_argument("--image-format", "-f", metavar="FMT",
                        help="format of the image PATH (qemu-img -f; qcow2 or raw); also forces "
                             "PATH to be read as an image")
    parser.add_argument("--domain", "-d", action="append", metavar="NAME", dest="domains", default=[],
                        help="check every disk of this libvirt domain (repeatable): a running one "
                             "live over QMP, a shut-off one with qemu-img, and its checkpoints")
    parser.add_argument("--all-domains", action="store_true",
                        help="check every disk of every domain libvirt knows")
    parser.add_argument("--disk", action="append", metavar="TARGET", dest="disks", default=[],
                        help="with --domain: only this disk (vda...; repeatable)")
    parser.add_argument("--connect", "-c", metavar="URI",
                        help="with --domain: the libvirt connection (virsh -c URI)")
    parser.add_argument("--json", action="store_true", dest="as_json",
                        help="read every PATH as JSON, whatever its name (default: only *.json "
                             "and -)")
    parser.add_argument("--max-json-size", type=_size, default=MAX_JSON, metavar="SIZE",
                        help=f"read at most SIZE bytes of JSON per input (K, M, G suffixes; "
                             f"default: {MAX_JSON >> 20}M)")
    parser.add_argument("--trust-backing", action="store_true",
                        help="let qemu-img open whatever the images name (URLs, devices, data "
                             "files, other formats), with network; the report says so "
                             "(README: Security)")
    parser.add_argument("--timeout", type=float, default=qemu.TIMEOUT, metavar="SECONDS",
                        help=f"stop a qemu-img that runs longer (default: {qemu.TIMEOUT:g}); the "
                             f"input is reported as timed out")
    parser.add_argument("--engine", choices=("python", "jq"), default="python",
                        help="evaluate with the Python engine (default) or run the compiled jq "
                             "program through libjq; both give the same report")
    _rule_options(parser)


def _ids(text: str) -> list[str]:
    return [i for i in text.split(",") if i]


def _size(text: str) -> int:
    """A byte count: 1048576, 512K, 64M, 1G."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number, unit = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units else (text, 1)
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64M)")
    return int(number) * unit


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
    if args.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    if args.as_json and args.image_format:
        raise UsageError("--json and --image-format contradict each other: a PATH is one or the other")
    program = None
    if args.engine == "jq":
        from . import jqbackend  # only --engine jq needs the jq program and its binding

        program = jqbackend.binding(rules)  # compiled once
    if args.domains or args.all_domains:
        return _check_domains(args, rules, program, output_format(batch=True))
    if args.disks:
        raise UsageError("--disk picks disks of a --domain")
    sources = args.inputs
    if not sources:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("nothing to check: give an image, a JSON file, "
                             "or - to read JSON from standard input")
        sources = [STDIN]
    if sources.count(STDIN) > 1:
        raise UsageError("standard input (-) can be read only once")
    output = output_format(batch=len(sources) > 1 or output_format.named)

    def one(source: str) -> list[tuple[str, Outcome]]:
        try:
            return [(source, _check_one(source, args, rules, program))]
        except qemu.Stopped:
            raise
        except KbrulesError as e:
            return [(source, e)]

    return _check_all(sources, one, args.jobs, output)


def _check_one(source: str, args: argparse.Namespace, rules: list[Rule], program: Any) -> Result:
    """One input's result; `program` is the compiled jq program for --engine jq."""
    # jq takes JSON as read: it refuses bad input itself, in check's words.
    read = (read_raw if program is not None else read_input)(
        source, top=args.top, image_format=args.image_format, force_share=args.force_share,
        as_json=args.as_json, trust_backing=args.trust_backing, max_json=args.max_json_size,
        timeout=args.timeout)
    return _judge(read, args, rules, program)


def _judge(read: Union[Input, Raw], args: argparse.Namespace, rules: list[Rule], program: Any) -> Result:
    for warning in read.warnings:
        say(f"qemu-img said: {warning.removeprefix('qemu-img: ')}")
    for note in read.notes:
        say(f"note: {note}")
    if program is not None:
        from . import jqbackend  # imported by check() already: --engine jq

        data = jqbackend.run(program, read.value, args.bitmaps, args.top, read.context, where=read.name)
        if isinstance(read, Input):  # jq reads JSON: it never opens images
            data["trust_backing"] = read.chain.trust_backing
        return Result(read.name, EXIT_OK if data["ok"] else EXIT_FINDINGS, data)
    assert isinstance(read, Input)
    report = evaluate(read.chain, rules, args.bitmaps)
    return Result(read.name, EXIT_FINDINGS if report.has_error else EXIT_OK, report)


def _check_domains(args: argparse.Namespace, rules: list[Rule], program: Any, output: Output) -> int:
    """Every disk of each domain asked for: one result per disk, in the domains' order."""
    if args.inputs or args.top or args.image_format or args.force_share or args.as_json:
        raise UsageError("--domain and --all-domains read the domains' own disks: give no PATH, "
                         "--top, --image-format, --force-share or --json with them")
    from . import libvirt  # virsh, XML and threads: only --domain needs them

    names = libvirt.all_domains(args.connect) if args.all_domains else list(dict.fromkeys(args.domains))

    def one(name: str) -> list[tuple[str, Outcome]]:
        try:
            disks = libvirt.read_domain(name, args.connect, args.disks or ())
        except qemu.Stopped:
            raise
        except KbrulesError as e:
            return [(name, Result.failed(name, e, domain=name))]
        out: list[tuple[str, Outcome]] = []
        for disk in disks:
            if disk.input is not None:
                try:
                    out.append((disk.name, _judge(disk.input, args, rules, program)))
                except KbrulesError as e:
                    out.append((disk.name, Result.failed(disk.name, e, domain=name)))
            else:
                out.append((disk.name, Result(disk.name, EXIT_ERROR if disk.error else EXIT_OK,
                                              error=disk.error and show(disk.error), skipped=disk.skipped,
                                              reason=disk.reason, domain=name)))
        return out

    return _check_all(names, one, args.jobs, output)


Outcome = Union[Result, KbrulesError]


def _check_all(items: list[str], one: Callable[[str], list[tuple[str, "Outcome"]]], jobs: int,
               output: Output) -> int:
    """Every item (an input, or a domain and so its disks), in worker threads (qemu-img
    and virsh are other processes, so the GIL does not matter), `jobs` at a time;
    results print in the items' order as soon as they are ready, and the exit status is
    the worst of all. A bad input is reported and the others still run (with one input,
    its error is kbrules' error: exit 2).

    The main thread only waits and prints, so a signal always reaches it at once:
    SIGINT or SIGTERM kills every qemu-img with its process group, prints the reports
    already finished (in order), and ends kbrules with 128 + the signal."""
    outcomes: list[Optional[list[tuple[str, Outcome]]]] = [None] * len(items)
    pending = iter(range(len(items)))
    ready = threading.Condition()
    over = threading.Event()
    runs = qemu.Runs()

    def work() -> None:
        while not over.is_set():
            with ready:
                index = next(pending, None)
            if index is None:
                return
            try:
                with qemu.joined(runs):
                    found = one(items[index])
            except qemu.Stopped:
                return  # kbrules is stopping: this item is not finished
            with ready:
                outcomes[index] = found
                ready.notify_all()

    for n in range(min(jobs, len(items))):
        threading.Thread(target=work, name=f"kbrules-check-{n}", daemon=True).start()
    worst, shown = EXIT_OK, 0
    progress = _Progress(len(items))
    try:
        while shown < len(items):
            with ready:
                while outcomes[shown] is None:
                    ready.wait(0.2)  # a signal interrupts the wait either way
                found = outcomes[shown]
            assert found is not None
            for source, outcome in found:
                worst = max(worst, _show(source, outcome, output, progress))
            shown += 1
    except Interrupted as stop:
        over.set()
        runs.stop()
        finished = [(s, o) for f in outcomes[shown:] if f is not None for s, o in f
                    if output.batch or isinstance(o, Result)]
        for source, outcome in finished:
            _show(source, outcome, output, progress)
        output.end()
        say(f"interrupted by {signal.Signals(stop.signum).name}: {shown + len(finished)} of "
            f"{len(items)} inputs checked, their reports printed; qemu-img stopped")
        raise
    finally:
        over.set()
        runs.stop()  # nothing runs any more when all is done; else (an error) it ends here
        progress.clear()
    output.end()
    return worst


def _show(source: str, outcome: Outcome, output: Output, progress: "_Progress") -> int:
    """Print one input's outcome; its exit status."""
    progress.step()
    if isinstance(outcome, KbrulesError):
        if not output.batch:
            raise outcome  # the one input failed: kbrules' own error, exit 2
        say(str(outcome))
        outcome = Result.failed(source, outcome)
    elif outcome.error is not None:
        say(outcome.error)
    progress.clear()
    with _SIGNALS.held():  # a JSONL line or a report is written whole
        output.add(outcome)
    return outcome.code


class _Progress:
    """'checked N/M' on stderr, only for a person watching a long run."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.shown = total, 0, False
        self.on = total >= 20 and sys.stderr is not None and sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if self.on and (self.done % 10 == 0 or self.done == self.total):
            print(f"\rkbrules: checked {self.done}/{self.total}", end="", file=sys.stderr, flush=True)
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self.shown = False


def jq_program(args: argparse.Namespace) -> int:
    from . import jqbackend  # only this command and --engine jq need it

    rules = _rules(args)
    text = jqbackend.module_file(rules) if args.module else jqbackend.program_file(rules)
    write_text(text.rstrip("\n"))
    return EXIT_OK


def test_rules(args: argparse.Namespace) -> int:
    """kbrules test: every example of every rule, in both engines."""
    from .examples import ENGINES, check_example  # only this command runs examples here

    rules = load_rules(args.files or None, examples=False)  # they are what is tested
    runs = failed = 0
    source = None
    for rule in rules:
        if rule.source != source:
            source = rule.source
            write_text(source)
        problems = [p for n, e in enumerate(rule.examples, 1) for engine in ENGINES
                    if (p := check_example(rule, e, n, engine))]
        runs += len(rule.examples) * len(ENGINES)
        failed += len(problems)
        write_text(f"  {'FAIL' if problems else 'ok  '}  {rule.id}  "
                   f"({len(rule.examples)} examples x {', '.join(ENGINES)})")
        for problem in problems:
            write_text(f"        {show(problem)}")
    write_text(f"{count(len(rules), 'rule')}, {runs} runs: {runs - failed} passed, {failed} failed")
    return EXIT_FINDINGS if failed else EXIT_OK


def list_rules(args: argparse.Namespace) -> int:
    """The rules by article: id, severity and title, the titles wrapped to the width."""
    rules = _rules(args)
    width = terminal_style().width
    out: list[str] = []
    for article in dict.fromkeys(r.article for r in rules):
        rows = [["ID", "SEVERITY", "TITLE"]] + [[r.id, r.severity, r.title]
                                                for r in rules if r.article == article]
        out += [""] if out else []
        out += [f"docs/kbase/{article}.rst:", *table(rows, width, indent="  ")]
    write_text("\n".join(out))
    return EXIT_OK


def explain(args: argparse.Namespace) -> int:
    rules = {r.id: r for r in load_rules(args.rules)}
    rule = rules.get(args.rule)
    if rule is None:
        raise UsageError(f"unknown rule id {args.rule!r} (known: {', '.join(rules)})")
    write_text(explanation(rule, terminal_style()))
    return EXIT_OK


def check_to(args: argparse.Namespace) -> int:
    """kbrules check, to standard output or --output FILE."""
    with to_file(args.output):
        return check(args)


def plan_script(args: argparse.Namespace) -> int:
    """kbrules plan: kbrules check, printed as the repair plan's script."""
    if args.engine == "jq":
        raise UsageError("kbrules plan writes its script from the Python engine; the jq program gives "
                         "the same plan as data: kbrules check --engine jq --format json (its 'plan')")
    args.format = "script"
    return check_to(args)


COMMANDS = {"check": check_to, "plan": plan_script, "jq": jq_program, "test": test_rules, "list": list_rules,
            "explain": explain}


class _Signals:
    """SIGINT and SIGTERM become Interrupted in the main thread; while the output is
    being written (held), the signal waits until the piece is whole."""

    def __init__(self) -> None:
        self.holding = 0
        self.pending: Optional[int] = None

    def handler(self, signum: int, frame: Any) -> None:
        if self.holding:
            self.pending = signum
        else:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if not self.holding and self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)

    @contextlib.contextmanager
    def caught(self) -> Iterator[None]:
        """Catch SIGINT and SIGTERM for the block (from the main thread only: Python
        allows no other), then put the previous handlers back."""
        self.holding, self.pending = 0, None
        previous: dict[signal.Signals, Any] = {}
        try:
            for which in (signal.SIGINT, signal.SIGTERM):
                previous[which] = signal.signal(which, self.handler)
        except ValueError:  # not the main thread: the caller keeps its own handlers
            pass
        try:
            yield
        finally:
            for which, old in previous.items():
                signal.signal(which, old)


_SIGNALS = _Signals()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script: the command's exit status, or 2 with one line on stderr
    (bad input, a failed qemu-img, an output that cannot be written), 128 + N for
    signal N, 141 when the reader of stdout went away. Never a traceback."""
    if sys.stdout is None:  # started with stdout closed (>&-): nowhere to report
        say("standard output is closed: nowhere to write a report")
        return EXIT_ERROR
    # The input, maybe a large JSON document, lives until the end, and kbrules makes no
    # reference cycles worth collecting: the cyclic collector would only walk the input
    # again and again (a fifth of a big check's time). Reference counting frees the rest.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with _SIGNALS.caught():
            args = build_parser().parse_args(argv)
            if args.command is None:
                raise UsageError("no command given: try kbrules check PATH (see kbrules --help)")
            return COMMANDS[args.command](args)
    except KbrulesError as e:
        # One line whatever the input held: control characters in paths or names are escaped.
        say(str(e))
        return EXIT_ERROR
    except ReaderGone:
        return EXIT_PIPE
    except Interrupted as e:
        return 128 + e.signum
    except KeyboardInterrupt:  # SIGINT where kbrules could not catch it (not the main thread)
        return 128 + int(signal.SIGINT)
    finally:
        if collecting:
            gc.enable()


if __name__ == "__main__":
    sys.exit(main())
