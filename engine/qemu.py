"""Running qemu-img: the one place kbrules starts another program, and the walls it
runs inside, as OpenStack Nova runs ``qemu-img info`` on images it does not trust:

- resource limits, set before qemu-img starts (by ``prlimit``, or in the child where
  it is missing): CPU time, address space and file size (``LIMITS``: 30 s, 1 GiB, no
  file written), no core dump;
- its own process group, killed whole on a timeout, or when kbrules is interrupted
  (``Runs.stop``);
- no network: a network namespace of its own (``unshare --net``, or a user namespace
  with one for a user that is not root), where the platform allows it; otherwise the
  limits still hold;
- no terminal: standard input is /dev/null.

What qemu-img may open at all is decided before it runs (engine/inspect.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from .errors import InputError, KbrulesError, ToolError, ToolTimeout

TIMEOUT = 120.0  # seconds of wall-clock time; qemu-img reads 2000 layers in about 1 s
LOCKED = 'Failed to get shared "write" lock'
QUOTE = 160  # characters of qemu-img's stderr quoted in a message, at most


@dataclass(frozen=True)
class Limits:
    cpu: int = 30  # seconds of CPU time (SIGXCPU, then SIGKILL a second later)
    memory: int = 1 << 30  # bytes of address space
    file_size: int = 0  # bytes: qemu-img info writes no file


LIMITS = Limits()


class ImageInUse(InputError):
    """The image is open read-write in a running VM or qemu-nbd."""

    reason = "image_in_use"


class TimedOut(ToolTimeout):
    """qemu-img did not finish in time, and was killed with its process group."""


class Stopped(KbrulesError):
    """kbrules is stopping (a signal): qemu-img was killed, or not started."""


@dataclass(frozen=True)
class Ran:
    """What a run of qemu-img (or virsh) gave."""

    stdout: bytes
    stderr: str
    returncode: int


class Runs:
    """The qemu-img processes of one command, started by any of its threads:
    stop() kills each with its process group, and no new one starts after it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._stopped = False

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for proc in self._running:
                _kill(proc)

    def _started(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.add(proc)
            if self._stopped:  # stop() ran while this one was starting
                _kill(proc)

    def _ended(self, proc: subprocess.Popen[bytes], label: str) -> None:
        with self._lock:
            self._running.discard(proc)
            if self._stopped:
                raise Stopped(f"{label}: not checked: kbrules is stopping")

    def _check(self, label: str) -> None:
        with self._lock:
            if self._stopped:
                raise Stopped(f"{label}: not checked: kbrules is stopping")


_local = threading.local()
_ANY = Runs()  # runs outside of a command (the Python API): never stopped


@contextlib.contextmanager
def joined(runs: Runs) -> Iterator[None]:
    """Count the qemu-img runs of this thread, for the block, among `runs`."""
    previous = getattr(_local, "runs", None)
    _local.runs = runs
    try:
        yield
    finally:
        _local.runs = previous


def run_program(argv: list[str], timeout: float) -> Ran:
    """Run a trusted program (virsh) to its end, or kill it after `timeout` seconds:
    subprocess.TimeoutExpired. No walls: it reads nothing from a guest. (LC_ALL=C:
    messages in English, as kbrules quotes them.) FileNotFoundError when it is not
    installed."""
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"})
    return Ran(done.stdout, done.stderr.decode("utf-8", "replace"), done.returncode)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is None:  # not reaped: its pid is still its own
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _rlimits(limits: Limits) -> list[tuple[int, str, int, int]]:
    """(resource, prlimit option, soft, hard) of each limit; a limit can be lowered,
    never raised above the current hard one."""
    wanted = [(resource.RLIMIT_CPU, "cpu", limits.cpu, limits.cpu + 1),
              (resource.RLIMIT_AS, "as", limits.memory, limits.memory),
              (resource.RLIMIT_FSIZE, "fsize", limits.file_size, limits.file_size),
              (resource.RLIMIT_CORE, "core", 0, 0)]
    out = []
    for which, option, soft, hard in wanted:
        current = resource.getrlimit(which)[1]
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        out.append((which, option, soft, hard))
    return out


def _limited(argv: list[str], limits: Limits) -> tuple[list[str], Optional[Callable[[], None]]]:
    """argv under the limits: through util-linux's prlimit, which lets Python start
    the child with vfork (a fork of a large kbrules costs a third of a small chain's
    check); else set in the child before exec (setrlimit only, on values computed
    here: nothing that allocates or locks runs between fork and exec)."""
    pairs = _rlimits(limits)
    prlimit = _which("prlimit")
    if prlimit:
        return [prlimit, *(f"--{option}={soft}:{hard}" for _, option, soft, hard in pairs), "--", *argv], None

    def apply() -> None:
        for which, _, soft, hard in pairs:
            resource.setrlimit(which, (soft, hard))
    return argv, apply


_which = functools.lru_cache(maxsize=None)(shutil.which)
_PROBE = threading.Lock()


@functools.lru_cache(maxsize=1)
def no_network() -> tuple[str, ...]:
    """The command prefix that runs a program without network, or () where this
    platform allows none (no unshare, no namespaces for this user)."""
    for prefix in (("unshare", "--net", "--"), ("unshare", "--user", "--map-root-user", "--net", "--")):
        try:
            done = subprocess.run([*prefix, "true"], stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return ()
        if done.returncode == 0:
            return prefix
    return ()


def run(argv: list[str], label: str, timeout: float = TIMEOUT, network: bool = False,
        limits: Limits = LIMITS) -> Ran:
    """Run a program (qemu-img) contained; `label` names the input in messages."""
    if shutil.which(argv[0]) is None:
        raise ToolError(f"{argv[0]} not found: install it (Debian/Ubuntu: apt-get install "
                        f"qemu-utils; Fedora/RHEL: dnf install qemu-img)")
    with _PROBE:  # the batch's workers wait for one probe, not each make their own
        prefix = () if network else no_network()
    wrapped, preexec = _limited([*prefix, *argv], limits)
    runs: Runs = getattr(_local, "runs", None) or _ANY
    runs._check(label)
    # MALLOC_ARENA_MAX: glibc reserves 64 MiB of address space per thread for malloc;
    # qemu-img's thread pool would then reach the address-space limit without using
    # the memory (seen: 300 snapshots read with -U), and the limit would mean nothing.
    env = {**os.environ, "LC_ALL": "C", "MALLOC_ARENA_MAX": "2"}
    try:
        proc = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=preexec, env=env)
    except (OSError, subprocess.SubprocessError) as e:  # no fork, or the limits failed
        raise ToolError(f"{label}: cannot start {argv[0]}: {getattr(e, 'strerror', None) or e}") from None
    runs._started(proc)
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.communicate()
            raise TimedOut(f"{label}: qemu-img did not finish within {timeout:g} s and was "
                           f"stopped (a hung file system, or a backing file that never "
                           f"answers)") from None
        except BaseException:  # interrupted: the child goes with kbrules
            _kill(proc)
            proc.communicate()
            raise
    finally:
        runs._ended(proc, label)
    return Ran(out, err.decode("utf-8", "replace"), proc.returncode)


def first_line(stderr: str) -> str:
    """The first line qemu-img wrote, shortened: never more of its stderr than that."""
    line = next((line.strip() for line in stderr.splitlines() if line.strip()), "(no message)")
    return line if len(line) <= QUOTE else line[:QUOTE - 1] + "…"


def _failure(label: str, ran: Ran, limits: Limits) -> ToolError:
    """One line saying why qemu-img failed: its exit status or the signal that ended
    it (a resource limit, most likely), and its first line of stderr."""
    if ran.returncode >= 0:
        short = any(sign in ran.stderr for sign in ("Cannot allocate memory", "Resource temporarily unavailable"))
        limit = f" (at its memory limit of {limits.memory >> 20} MiB?)" if short else ""
        return ToolError(f"{label}: qemu-img info failed (exit {ran.returncode}){limit}: {first_line(ran.stderr)}")
    number = -ran.returncode
    why = {int(signal.SIGXCPU): f"used up its CPU time limit ({limits.cpu} s)",
           int(signal.SIGXFSZ): "tried to write a file, which kbrules does not allow",
           int(signal.SIGKILL): "was killed"}.get(
        number, f"crashed, perhaps at its memory limit ({limits.memory >> 20} MiB)")
    name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
    said = f": {first_line(ran.stderr)}" if ran.stderr.strip() else ""
    return ToolError(f"{label}: qemu-img {why} ({name}){said}")


def _info_argv(path: str, image_format: Optional[str], force_share: bool, chain: bool) -> list[str]:
    return (["qemu-img", "info", "--output=json"] + (["--backing-chain"] if chain else [])
            + (["-U"] if force_share else []) + (["-f", image_format] if image_format else [])
            + ["--", path])  # a name (a guest's, for a backing file) is never an option


def info(path: str, image_format: Optional[str] = None, force_share: bool = False, *,
         chain: bool = True, label: Optional[str] = None, network: bool = False,
         timeout: float = TIMEOUT, limits: Limits = LIMITS) -> tuple[bytes, list[str]]:
    """qemu-img info --output=json [--backing-chain] of an image on disk: its JSON
    text, and qemu-img's warning (the first line of stderr of a run that succeeded)."""
    label = label or path
    ran = run(_info_argv(path, image_format, force_share, chain), label, timeout, network, limits)
    if ran.returncode != 0:
        if LOCKED in ran.stderr:
            raise ImageInUse(
                f"{label}: the image is in use (a running VM or qemu-nbd holds it open "
                f"read-write), so its bitmaps cannot be judged offline; check the live VM: "
                f"virsh qemu-monitor-command DOMAIN '{{\"execute\":\"query-named-block-nodes\","
                f"\"arguments\":{{\"flat\":true}}}}' | kbrules check -  (or add --force-share "
                f"to read it anyway; its in-use flags then mean nothing)")
        raise _failure(label, ran, limits)
    return ran.stdout, [first_line(ran.stderr)] if ran.stderr.strip() else []


def held_rw(filename: str, fmt: str, timeout: float = TIMEOUT) -> bool:
    """Whether another program may hold this one layer open read-write: a plain
    (locking) read of that layer alone fails. Any failure counts as 'may'."""
    return run(_info_argv(filename, fmt, force_share=False, chain=False), filename, timeout).returncode != 0
