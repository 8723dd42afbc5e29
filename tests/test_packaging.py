"""What a new user relies on: README's commands, the bundled example, and rules that
ship inside the installed package."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from engine.loader import load_rules
from helpers import kbrules

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "broken-chain.json"


def _readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)[:2]


def test_ci_runs_readme_test_command() -> None:
    steps = [step.strip() for step in _readme_commands()[1].split("&&")]
    test_command = steps[-1]
    assert test_command.startswith("python3 -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1].strip() == test_command
    # The same virtual environment as README's (Debian's Python refuses pip outside one).
    for step in ("python3 -m venv .venv", ". .venv/bin/activate"):
        assert step in steps and step in ci, step
    assert "python3-venv" in steps[1] and "python3-venv" in "\n".join(ci)


def test_readme_example_runs() -> None:
    check = _readme_commands()[0].split("&&")[-1].split()
    assert check[:2] == ["kbrules", "check"]
    run = kbrules("check", str(ROOT / check[2]))
    assert run.code == 1 and "1 valid, 4 not valid" in run.out


def test_bundled_example_is_what_the_script_makes(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.json"
    subprocess.run([str(EXAMPLE.parent / "make-example.sh"), str(fresh)], check=True)

    def report(path: Path) -> object:
        return kbrules("check", str(path), "--format", "json").json()

    assert report(fresh) == report(EXAMPLE)
    verdicts = {b["name"]: [f["rule"] for f in b["findings"]] for b in report(EXAMPLE)["bitmaps"]}
    assert verdicts == {"crashed": ["bitmap-consistent"], "daily": [],
                        "old": ["bitmap-in-top", "bitmap-contiguous"],
                        "paused": ["bitmap-recording"], "weekly": ["bitmap-contiguous"]}


def test_wheel_ships_and_runs_the_rules(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("kbrules-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "site")
    for stem in ("incremental-backup", "image-health", "checkpoints"):
        assert f"engine/rules/{stem}.yaml" in names
    assert "engine/rules/checked.sha256" in names  # their examples then do not run at start-up
    # The jq program and module: what `kbrules check` runs, for hosts without Python.
    assert {"engine/rules/check.jq", "engine/rules/kbrules.jq"} <= set(names)
    # Run from the unpacked wheel, away from the source tree.
    code = ("import json, sys; from engine.cli import main; sys.exit(main(['check', sys.argv[1], "
            "'--format', 'json']))")
    done = subprocess.run([sys.executable, "-c", code, str(EXAMPLE)], cwd=tmp_path,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert set(json.loads(done.stdout)["rules"]) == {r.id for r in load_rules()}
    by_jq = subprocess.run(["jq", "-f", str(tmp_path / "site" / "engine" / "rules" / "check.jq"), str(EXAMPLE)],
                           capture_output=True, text=True, check=True)
    assert json.loads(by_jq.stdout) == json.loads(done.stdout)
