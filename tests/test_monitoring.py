"""The monitoring setup of docs/monitoring/, with the real programs: promtool checks and
unit-tests the alert rules, systemd-analyze verifies the units, a real node_exporter
and a real Prometheus scrape what kbrules writes until Prometheus holds the values of
kbrules' JSON report, and the unit's own command line runs against a real libvirtd
in a sandbox like the unit's.

Every daemon is started here, on 127.0.0.1 with free ports, and ended by its PID."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

import libvirtd
from helpers import kbrules, make_chain
from metrics import HOSTILE_BITMAPS, Series, expected, parse, series, without_run

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "docs" / "monitoring"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # Debian's, in the shipped unit
WAIT = 30  # seconds for Prometheus to hold what kbrules wrote


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (apt-get install prometheus prometheus-node-exporter)"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)


# The alert rules -------------------------------------------------------------------------

def test_promtool_checks_the_alert_rules() -> None:
    _need("promtool")
    done = subprocess.run(["promtool", "check", "rules", "kbrules.rules.yml"], cwd=MONITORING,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "SUCCESS: 6 rules found" in done.stdout, done


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    _need("promtool")
    done = subprocess.run(["promtool", "test", "rules", "kbrules.rules.test.yml"], cwd=MONITORING,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_an_alert_rule_that_changes_fails_its_unit_test(tmp_path: Path) -> None:
    # The unit tests can fail: with "for: 10m" changed to 20m, they must.
    _need("promtool")
    rules = (MONITORING / "kbrules.rules.yml").read_text()
    line = "        for: 10m\n"  # the first alert's: KbrulesBitmapNotValid
    assert rules.count(line) >= 3
    (tmp_path / "kbrules.rules.yml").write_text(rules.replace(line, line.replace("10m", "20m"), 1))
    shutil.copy(MONITORING / "kbrules.rules.test.yml", tmp_path)
    done = subprocess.run(["promtool", "test", "rules", "kbrules.rules.test.yml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 1 and "KbrulesBitmapNotValid" in done.stdout + done.stderr, done


# The systemd units -----------------------------------------------------------------------

def unit(name: str) -> dict[str, list[str]]:
    """A unit file's settings: key -> values, in order (comments left out)."""
    out: dict[str, list[str]] = {}
    for line in (MONITORING / name).read_text().splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _local_units(tmp_path: Path) -> list[Path]:
    """The units as shipped, but for the path of kbrules: the one under test."""
    kbrules_bin = shutil.which("kbrules")
    assert kbrules_bin, "the kbrules script is not on PATH"
    out = []
    for name in ("kbrules.service", "kbrules.timer"):
        text = (MONITORING / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/kbrules", kbrules_bin))
        out.append(tmp_path / name)
    return out


def test_the_shipped_service_runs_what_the_docs_say() -> None:
    service = unit("kbrules.service")
    (start,) = service["ExecStart"]
    assert start.split() == ["/usr/local/bin/kbrules", "check", "--all-domains", "--format", "prometheus",
                             "--output", f"{TEXTFILE_DIR}/kbrules.prom"]
    assert service["ReadWritePaths"] == [TEXTFILE_DIR] and service["SuccessExitStatus"] == ["1"]
    timer = unit("kbrules.timer")
    assert timer["OnUnitInactiveSec"] == ["5min"]
    # The staleness alert allows for a few missed runs of that timer.
    assert "time() - kbrules_last_run_timestamp_seconds > 20 * 60" in (MONITORING / "kbrules.rules.yml").read_text()


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    _need("systemd-analyze")
    units = _local_units(tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True)
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done
    # And it can fail: a key systemd does not know, or a command that is not there.
    bad = tmp_path / "bad.service"
    bad.write_text(units[0].read_text().replace("ExecStart=" + shutil.which("kbrules"),  # type: ignore[operator]
                                                "ExecStart=/nonexistent/kbrules"))
    assert subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True).returncode != 0


def test_the_service_is_hardened(tmp_path: Path) -> None:
    _need("systemd-analyze")
    service = _local_units(tmp_path)[0]
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(service)],
                          capture_output=True, text=True)
    exposure = float(done.stdout.split("Overall exposure level for kbrules.service:")[1].split()[0])
    # systemd's scale: 0 safe .. 10 unsafe; a plain service scores 9.6. Root, but with
    # two capabilities, no network and a read-only system, the unit scores 2.0 with
    # systemd 252 (the page promises 3 or less).
    assert exposure <= 3, done.stdout[-2000:]


# Daemons ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """A program started here, ended by its PID."""

    def __init__(self, argv: list[str], log: Path, port: int) -> None:
        self.log, self.port = log, port
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
            return answer.read()

    def wait_ready(self, path: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.log.name}: exited {self.process.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(OSError):
                self.get(path)
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.log.name}: no answer in {timeout} s:\n{self.log.read_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        pid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(pid, 9)
            self.process.wait()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(argv: list[str], name: str, port: int, ready: str) -> Daemon:
        daemon = Daemon(argv, tmp_path / f"{name}.log", port)
        started.append(daemon)
        daemon.wait_ready(ready)
        return daemon

    yield start
    for daemon in reversed(started):
        daemon.stop()


def node_exporter(start: Callable[..., Daemon], textfiles: Path) -> Daemon:
    port = free_port()
    return start(["prometheus-node-exporter", "--collector.disable-defaults", "--collector.textfile",
                  f"--collector.textfile.directory={textfiles}", f"--web.listen-address=127.0.0.1:{port}"],
                 "node-exporter", port, "/metrics")


def prometheus(start: Callable[..., Daemon], directory: Path, target: int) -> Daemon:
    directory.mkdir()
    config = directory / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(MONITORING / "kbrules.rules.yml")],
        "scrape_configs": [{"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}],
    }))
    port = free_port()
    return start(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={directory / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{port}"], "prometheus", port, "/-/ready")


def query(server: Daemon, promql: str) -> list[dict[str, Any]]:
    answer = json.loads(server.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def scraped(server: Daemon) -> dict[Series, float]:
    """Every kbrules series Prometheus holds now, without the target's own labels."""
    out = {}
    for sample in query(server, '{__name__=~"kbrules_.+"}'):
        labels = {k: v for k, v in sample["metric"].items() if k not in ("instance", "job")}
        out[series(labels.pop("__name__"), **labels)] = float(sample["value"][1])
    return out


def wait_until_scraped(server: Daemon, want: dict[Series, float]) -> dict[Series, float]:
    """Poll Prometheus until it holds exactly `want` (bounded)."""
    deadline = time.monotonic() + WAIT
    while True:
        got = scraped(server)
        if got == want:
            return got
        if time.monotonic() > deadline:
            missing = {k: v for k, v in want.items() if got.get(k) != v}
            extra = {k: v for k, v in got.items() if k not in want}
            raise AssertionError(f"after {WAIT} s, Prometheus differs: missing or other {missing}, extra {extra}")
        time.sleep(0.5)


def report_and_metrics(output: Path, *paths: str) -> tuple[list[dict[str, Any]], dict[Series, float]]:
    """kbrules' JSON report of the inputs, and the metrics it writes to `output`."""
    run = kbrules("check", "--format", "prometheus", "--output", str(output), *paths)
    report = kbrules("check", "--format", "jsonl", *paths)
    assert run.code == report.code == 1 and run.err == report.err == "", run
    return [json.loads(line) for line in report.out.splitlines()], parse(output.read_bytes().decode("utf-8"))


@pytest.mark.slow
def test_prometheus_holds_what_kbrules_reports_and_sees_a_bitmap_break(tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    _need("prometheus", "prometheus-node-exporter")
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    chains = {}
    for name, layers in {"healthy": [{"daily": "ok"}, {"daily": "ok"}],
                         "broken": [{"daily": "ok"}, {"daily": "disabled"}],
                         os.fsdecode(b'hostile "dir"\\\n\xff'): [{n: "ok" for n in HOSTILE_BITMAPS}]}.items():
        (tmp_path / name).mkdir()
        chains[name] = str(make_chain(tmp_path / name, layers)[0])
    output = textfiles / "kbrules.prom"
    report, written = report_and_metrics(output, *chains.values())
    assert without_run(written) == expected(report)

    exporter = node_exporter(daemons, textfiles)
    server = prometheus(daemons, tmp_path / "prometheus", exporter.port)
    got = wait_until_scraped(server, written)
    assert got[series("kbrules_bitmap_valid", disk=chains["healthy"], bitmap="daily")] == 1
    assert got[series("kbrules_bitmap_valid", disk=chains["broken"], bitmap="daily")] == 0
    bitmaps = {dict(k[1])["bitmap"] for k in got if k[0] == "kbrules_bitmap_valid"}
    assert set(HOSTILE_BITMAPS) <= bitmaps  # every hostile name, byte for byte, through Prometheus
    hostile = next(dict(k[1])["disk"] for k in got if dict(k[1]).get("bitmap") == HOSTILE_BITMAPS[0])
    assert hostile.endswith('/hostile "dir"\\\n\\xff/layer0.qcow2'), hostile  # 0xff is no UTF-8

    # A writer killed mid-write leaves the healthy chain's top bitmap inconsistent.
    top = Path(chains["healthy"])
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 0 64k", "-c", "abort", top.name], cwd=top.parent,
                   capture_output=True)
    report, written = report_and_metrics(output, *chains.values())
    assert without_run(written) == expected(report)
    got = wait_until_scraped(server, written)
    assert got[series("kbrules_bitmap_valid", disk=chains["healthy"], bitmap="daily")] == 0
    assert got[series("kbrules_findings", disk=chains["healthy"], bitmap="daily", rule="bitmap-consistent",
                      severity="error")] == 1
    # The alert rules are loaded and see it (pending: "for: 10m" is not over).
    deadline = time.monotonic() + WAIT
    while True:
        alerts = {(a["metric"]["disk"], a["metric"]["alertstate"])
                  for a in query(server, 'ALERTS{alertname="KbrulesBitmapNotValid"}')}
        if (chains["healthy"], "pending") in alerts or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert alerts == {(chains["healthy"], "pending"), (chains["broken"], "pending")}


# libvirt: the unit's own command line, in a sandbox like the unit's ----------------------

@pytest.fixture(scope="module")
def libvirt_daemons() -> libvirtd.Daemons:
    why = libvirtd.missing()
    if why:
        pytest.fail(f"CI must run the libvirt tests: {why}") if os.environ.get("CI") else pytest.skip(why)
    libvirtd.DAEMONS.ensure()
    return libvirtd.DAEMONS


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A directory outside /tmp (the unit has a private /tmp), that the libvirt-qemu user
    can read: images, the textfile directory, the cache."""
    path = Path(tempfile.mkdtemp(prefix="kbrules-monitoring-", dir="/run"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sandboxed(argv: list[str], writable: list[Path], env: dict[str, str],
              keep: Sequence[Path] = ()) -> subprocess.CompletedProcess[str]:
    """argv as the unit runs it, as far as util-linux can: a mount namespace with the
    whole file system read-only but for `writable` (ProtectSystem=strict,
    ReadWritePaths=), an empty /tmp and /var/tmp (PrivateTmp=), a network namespace of
    its own (PrivateNetwork=), no capability but the unit's two (CapabilityBoundingSet=)
    and no new privileges (NoNewPrivileges=). Not emulated: the system call filter, the
    address families, the kernel protections, MemoryDenyWriteExecute. `keep`: the
    directories under /tmp that stay seen in the empty /tmp (kbrules itself, when this
    tree and its venv are there; the unit runs /usr/local/bin/kbrules)."""
    service = unit("kbrules.service")
    (caps,) = service["CapabilityBoundingSet"]
    bounding = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps.split())])
    binds = "".join(f'mount --bind "{p}" "{p}" && ' for p in writable)
    kept = [p for p in keep if p.is_relative_to("/tmp")]
    stash = Path(tempfile.mkdtemp(prefix="kbrules-keep-", dir="/run")) if kept else None
    stashes = "".join(f'mkdir "{stash}/{i}" && mount --bind "{p}" "{stash}/{i}" && ' for i, p in enumerate(kept))
    restores = "".join(f'mkdir -p "{p}" && mount --bind "{stash}/{i}" "{p}" && ' for i, p in enumerate(kept))
    script = (f"{binds}{stashes}mount -o remount,bind,ro / && mount -t tmpfs tmpfs /tmp && "
              f"{restores}mount -t tmpfs tmpfs /var/tmp && exec \"$@\"")
    try:
        return subprocess.run(
            ["unshare", "--mount", "--net", "--propagation", "private", "--", "sh", "-c", script, "sh",
             "setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs", "--", *argv],
            capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    finally:
        if stash is not None:
            shutil.rmtree(stash)


@pytest.mark.slow
def test_the_units_command_checks_every_domain_in_its_sandbox(libvirt_daemons: libvirtd.Daemons,
                                                               run_dir: Path) -> None:
    _need("unshare", "setpriv")
    images, textfiles, cache = (run_dir / d for d in ("images", "textfiles", "cache"))
    for d in (images, textfiles, cache):
        d.mkdir()
    images.chmod(0o755)
    libvirtd.qemu_img("create", "-q", "-f", "qcow2", "base.qcow2", "64M", cwd=images)
    libvirtd.qemu_img("create", "-q", "-f", "qcow2", "-b", str(images / "base.qcow2"), "-F", "qcow2",
                      "top.qcow2", cwd=images)
    libvirtd.qemu_img("create", "-q", "-f", "raw", "data.raw", "16M", cwd=images)
    vm = libvirtd.Domain(images, {"vda": images / "top.qcow2"}).define()
    try:
        libvirtd.virsh("attach-disk", vm.name, str(images / "data.raw"), "vdb", "--subdriver", "raw", "--config")
        vm.start()
        vm.checkpoint("monday", "vda")
        vm.checkpoint("tuesday", "vda")
        # tuesday's bitmap stops recording: that checkpoint is no longer usable, monday is.
        top = next(n["node-name"] for n in vm.qmp("query-named-block-nodes", flat=True)
                   if n["drv"] == "qcow2" and n["file"] == str(images / "top.qcow2"))
        vm.qmp("block-dirty-bitmap-disable", node=top, name="tuesday")

        gone = f"{vm.name}-gone"
        run = kbrules("check", "--domain", vm.name, "--domain", gone, "-c", libvirtd.URI, "--format", "prometheus")
        report = kbrules("check", "--domain", vm.name, "--domain", gone, "-c", libvirtd.URI, "--format", "jsonl")
        assert run.code == report.code == 2, run
        entries = [json.loads(line) for line in report.out.splitlines()]
        found = without_run(parse(run.out))
        assert found == expected(entries, {f"{vm.name}/vdb": (vm.name, "vdb", "not_qcow2"),
                                           gone: (gone, "", "tool")})
        assert found[series("kbrules_checkpoint_usable", domain=vm.name, disk="vda", checkpoint="monday")] == 1
        assert found[series("kbrules_checkpoint_usable", domain=vm.name, disk="vda", checkpoint="tuesday")] == 0
        assert found[series("kbrules_checkpoint_newest_usable", domain=vm.name, disk="vda", checkpoint="monday")] == 1
        assert found[series("kbrules_input_skipped", domain=vm.name, disk="vdb", reason="not_qcow2")] == 1

        # The unit's ExecStart (--all-domains), sandboxed, writes the same for this domain
        # (other domains on this host may come and go meanwhile).
        (start,) = unit("kbrules.service")["ExecStart"]
        kbrules_bin = shutil.which("kbrules")
        assert kbrules_bin
        argv = start.replace("/usr/local/bin/kbrules", kbrules_bin).replace(TEXTFILE_DIR, str(textfiles)).split()
        done = sandboxed(argv, [textfiles, cache], {"KBRULES_CACHE_DIR": str(cache)},
                         keep=[ROOT, Path(kbrules_bin).resolve().parents[1]])
        assert done.returncode in (1, 2), done  # 1: tuesday; 2 only for another domain
        assert [p.name for p in textfiles.iterdir()] == ["kbrules.prom"], done
        written = parse((textfiles / "kbrules.prom").read_bytes().decode("utf-8"))
        mine = {k: v for k, v in written.items() if ("domain", vm.name) in k[1]}
        assert mine == {k: v for k, v in found.items() if ("domain", vm.name) in k[1]}, done.stderr
        assert oct((textfiles / "kbrules.prom").stat().st_mode & 0o777) == "0o644"
    finally:
        vm.close()


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="namespaces need unshare, and root")
def test_the_sandbox_is_what_it_says(run_dir: Path) -> None:
    writable = run_dir / "rw"
    writable.mkdir()
    done = sandboxed(["sh", "-c", f"touch {writable}/ok && ! touch {run_dir}/no 2>/dev/null && "
                                  "touch /tmp/private && ls /tmp && grep -c : /proc/net/dev && "
                                  "grep CapBnd /proc/self/status"], [writable], {})
    assert done.returncode == 0, done
    lines = done.stdout.split()
    assert lines[:2] == ["private", "1"]  # an empty /tmp of its own; only the loopback device
    assert lines[2:] == ["CapBnd:", "0000000000000006"]  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    assert (writable / "ok").exists() and not (run_dir / "no").exists()
    assert not Path("/tmp/private").exists()
