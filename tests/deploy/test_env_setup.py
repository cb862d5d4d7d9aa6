"""scripts/env.sh, the set-up of ``./lgsp-bus`` and ``./test``: the first run says what it
does, phase by phase, with a package count instead of a minute of silence or pip's full
noise; pip's output is kept in a log and shown when pip fails; later runs are silent.

A fake ``python`` stands in for the interpreter (``-m venv`` makes a venv of fakes, ``-m pip``
prints what real pip prints for an install of ``PACKAGES`` packages), so the test needs no
network and runs as CI runs it: no terminal, no stdin.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO

ENV_SH = REPO / "scripts" / "env.sh"
PACKAGES = 25

FAKE_PYTHON = r"""#!/usr/bin/env bash
# A stand-in for python3: enough of -c, -V, -m venv and -m pip for scripts/env.sh.
case "$1" in
  -c) exit 0 ;;
  -V) echo "Python 3.11.99"; exit 0 ;;
  -m)
    if [ "$2" = venv ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
    echo "pip $*" >>"$FAKE_CALLS"
    if [[ " $* " == *" --upgrade pip "* ]]; then
      echo "Collecting pip"; echo "Installing collected packages: pip"; exit 0
    fi
    echo "Obtaining file:///src"
    for i in $(seq 1 "$FAKE_PACKAGES"); do
      echo "Collecting pkg$i>=1.0 (from lgsp-bus==0.1.0)"
      echo "  Downloading pkg$i-1.0-py3-none-any.whl (12 kB)"
    done
    echo "Processing /opt/wheels/local_pkg-2.0-py3-none-any.whl (from lgsp-bus==0.1.0)"
    names=$(for i in $(seq 1 "$FAKE_PACKAGES"); do printf 'pkg%s, ' "$i"; done)
    echo "Installing collected packages: ${names}local-pkg, lgsp-bus"
    if [ "${FAKE_FAIL:-0}" = 1 ]; then
      echo "ERROR: Could not install packages due to an OSError: [Errno 28] No space left"
      exit 1
    fi
    echo "Successfully installed lgsp-bus-0.1.0"
    exit 0 ;;
esac
exit 2
"""


def setup(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``ensure_venv dev`` in a checkout at ``tmp_path``, with the fake interpreter."""
    fake = tmp_path / "python3"
    if not fake.exists():
        fake.write_text(FAKE_PYTHON, encoding="utf-8")
        fake.chmod(0o755)
        (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
    environment = {
        "PATH": os.environ["PATH"],
        "CI": "true",
        "ROOT": str(tmp_path),
        "LGSP_VENV": str(tmp_path / ".venv"),
        "PYTHON": str(fake),
        "FAKE_CALLS": str(tmp_path / "calls"),
        "FAKE_PACKAGES": str(PACKAGES),
        **env,
    }
    script = f'set -euo pipefail; source "{ENV_SH}"; ensure_venv dev; echo done'
    return subprocess.run(
        ["bash", "-c", script],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_first_run_reports_each_phase_and_a_package_count(tmp_path: Path) -> None:
    first = setup(tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "done\n", "progress goes to stderr, never into a command's output"
    lines = first.stderr.splitlines()
    phases = [ln for ln in lines if ln.startswith("lgsp-bus: ")]
    assert "first run" in phases[0]
    assert [p.split()[1] for p in phases[1:4]] == ["[1/3]", "[2/3]", "[3/3]"]
    assert "installing lgsp-bus with its dev tools" in phases[3]
    assert phases[-1].startswith("lgsp-bus: ready after ")
    counted = PACKAGES + 1  # the local wheel too
    assert f"  fetched {counted}; installing {counted + 1} package(s)…" in lines
    assert "  fetched 10 packages (latest: pkg10)" in lines
    assert "  fetched 20 packages (latest: pkg20)" in lines
    assert len(lines) <= 12, "a line per phase, not pip's output"
    assert not any("Collecting" in ln or "Downloading" in ln for ln in lines)
    log = (tmp_path / ".venv" / "pip-install.log").read_text(encoding="utf-8")
    assert log.count("Collecting pkg") == PACKAGES, "pip's full output is kept"
    assert (tmp_path / ".venv" / ".lgsp-stamp-dev").is_file()

    again = setup(tmp_path)
    assert (again.returncode, again.stderr) == (0, ""), "later runs are silent"
    calls = (tmp_path / "calls").read_text(encoding="utf-8").splitlines()
    assert len(calls) == 2, "pip upgrade and the install, once"


def test_a_failing_install_shows_pips_error_and_stops(tmp_path: Path) -> None:
    failed = setup(tmp_path, FAKE_FAIL="1")
    assert failed.returncode != 0
    assert "done" not in failed.stdout
    assert "lgsp-bus: pip failed (exit 1)" in failed.stderr
    assert "No space left" in failed.stderr
    assert not (tmp_path / ".venv" / ".lgsp-stamp-dev").exists(), "retried on the next run"
    retried = setup(tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert "[3/3]" not in retried.stderr, "the venv exists: no first-run numbering"
    assert "lgsp-bus: installing lgsp-bus" in retried.stderr


def test_the_default_stores_side_files_are_not_tracked() -> None:
    """``lgsp-bus run`` keeps ./lgsp-bus.sqlite3 in WAL mode: its -wal and -shm files too."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    names = ["lgsp-bus.sqlite3", "lgsp-bus.sqlite3-wal", "lgsp-bus.sqlite3-shm", "x.db-wal"]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *names],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert sorted(result.stdout.split()) == sorted(names)
