"""deploy/Containerfile's build stage, reproduced without an engine: exactly the files its
COPY lines put into the build context become a wheel (the same hatchling build ``pip
install ".[fast]"`` runs), the wheel goes into a fresh virtual environment, and the
``lgsp-bus`` of that environment answers ``--help``, serves ``run`` on its shipped default
routing and passes ``lgsp-bus health`` (the image's HEALTHCHECK).

Dependencies come from a wheelhouse built once per machine and dependency set (kept in
pytest's cache directory, keyed by the wheel's ``Requires-Dist`` and the interpreter), so
only the first run downloads; later runs install offline (``--no-index``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.deploy import DEPLOY
from tests.support.stack import terminate

ROOT = DEPLOY.parent
CONTAINERFILE = DEPLOY / "Containerfile"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
INSTALL_RE = re.compile(r"""pip install\s+["']?\.(\[[a-z0-9_,-]+\])?["']?""")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class BuildStage:
    copies: list[tuple[list[str], str]]
    """(sources, destination) of every COPY of the stage, in order."""
    workdir: str
    extras: str
    """The extras of its ``pip install ".[…]"``, e.g. ``[fast]``."""


def build_stage(text: str) -> BuildStage:
    """The first stage of a Containerfile: its COPY lines, WORKDIR and pip install."""
    joined = text.replace("\\\n", " ")
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    stage = lines[froms[0] + 1 : froms[1] if len(froms) > 1 else None]
    copies: list[tuple[list[str], str]] = []
    workdir, extras = "/", None
    for line in stage:
        word, _, rest = line.partition(" ")
        if word.upper() == "WORKDIR":
            workdir = rest.strip()
        elif word.upper() == "COPY":
            args = shlex.split(rest)
            args = [a for a in args if not a.startswith("--")]
            if args and args[0].startswith("["):
                args = json.loads(rest[rest.index("[") :])
            copies.append((args[:-1], args[-1]))
        elif word.upper() == "RUN" and (m := INSTALL_RE.search(rest)):
            extras = m.group(1) or ""
    assert extras is not None, "the build stage installs the package with pip install ."
    return BuildStage(copies, workdir, extras)


def copy_context(stage: BuildStage, target: Path) -> Path:
    """Copy what the stage COPYs from the repository into ``target``; return the directory
    its ``pip install .`` runs in (the WORKDIR), with Docker's COPY semantics: a directory's
    contents go into the destination, files into it when it ends in ``/`` (or there are
    several sources)."""
    workdir = target / stage.workdir.lstrip("/")
    for sources, dest in stage.copies:
        base = Path(dest) if dest.startswith("/") else Path(stage.workdir) / dest
        destination = target / str(base).lstrip("/")
        into_dir = dest.endswith("/") or len(sources) > 1
        for source in sources:
            origin = ROOT / source
            assert origin.exists(), f"COPY {source}: not in the repository"
            if origin.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(origin, destination, ignore=ignore, dirs_exist_ok=True)
            else:
                final = destination / origin.name if into_dir else destination
                final.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, final)
    return workdir


def run(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=540, check=False, env=env, cwd=cwd
    )


def build_wheel(source: Path, out: Path) -> Path:
    """The project's wheel from ``source`` (hatchling of this venv, no network)."""
    result = run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)])
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("lgsp_bus-*.whl")
    return wheel


def wheelhouse(cache: Path, wheel: Path, extras: str) -> Path:
    """Wheels of every dependency of ``wheel[extras]``, built once per dependency set."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = sorted(
            ln for ln in zf.read(meta).decode().splitlines() if ln.startswith("Requires-Dist:")
        )
    key = hashlib.sha256(
        "\n".join([*requires, extras, sys.version, platform.platform()]).encode()
    ).hexdigest()[:16]
    house = cache / f"wheelhouse-{key}"
    house.mkdir(parents=True, exist_ok=True)
    if not (house / ".complete").exists():
        result = run([*PIP, "wheel", "-w", str(house), f"{wheel}{extras}"])
        assert result.returncode == 0, result.stdout + result.stderr
        for own in house.glob("lgsp_bus-*.whl"):
            own.unlink()
        (house / ".complete").write_text("\n".join(requires) + "\n", encoding="utf-8")
    return house


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """A fresh venv holding the wheel built from the Containerfile's build context."""
    stage = build_stage(CONTAINERFILE.read_text(encoding="utf-8"))
    tmp = tmp_path_factory.mktemp("image")
    source = copy_context(stage, tmp / "context")
    wheel = build_wheel(source, tmp / "dist")
    # pytest's cache outlives the session; without it (-p no:cacheprovider), this session's.
    store: pytest.Cache | None = getattr(pytestconfig, "cache", None)
    cache = store.mkdir("lgsp-image") if store is not None else tmp / "cache"
    house = wheelhouse(cache, wheel, stage.extras)
    venv = tmp / "venv"
    result = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert result.returncode == 0, result.stderr
    install = [*PIP, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-index"]
    result = run([*install, "--find-links", str(house), f"{wheel}{stage.extras}"])
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


def test_build_stage_reads_the_containerfile() -> None:
    stage = build_stage(CONTAINERFILE.read_text(encoding="utf-8"))
    sources = {s for sources, _ in stage.copies for s in sources}
    assert {"pyproject.toml", "bus", "adapters"} <= sources
    assert stage.workdir == "/src"
    # uvloop, and what the deploy routings may turn on: the Redis rate-limit backend (the
    # compose and k8s routings do) and tracing.
    assert set(stage.extras.strip("[]").split(",")) == {"fast", "redis", "otel"}


def test_the_context_ignore_file_keeps_what_the_build_copies() -> None:
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert ".venv" in patterns
    assert ".git" in patterns
    stage = build_stage(CONTAINERFILE.read_text(encoding="utf-8"))
    for sources, _ in stage.copies:
        for source in sources:
            for pattern in patterns:
                assert not fnmatch.fnmatch(source, pattern.removeprefix("**/")), (source, pattern)


def test_build_context_copy_follows_copy_semantics(tmp_path: Path) -> None:
    stage = BuildStage([(["pyproject.toml", "README.md"], "./"), (["bus"], "./bus")], "/src", "")
    workdir = copy_context(stage, tmp_path)
    assert (workdir / "pyproject.toml").is_file()
    assert (workdir / "README.md").is_file()
    assert (workdir / "bus" / "__init__.py").is_file()
    assert not (workdir / "routing.yaml").exists()
    assert not list(workdir.rglob("__pycache__"))


def test_a_context_lacking_a_force_included_file_does_not_build(tmp_path: Path) -> None:
    """What the test below guards against: the build fails when the Containerfile leaves
    out a file pyproject.toml needs (here the schema it force-includes)."""
    stage = build_stage(CONTAINERFILE.read_text(encoding="utf-8"))
    trimmed = [([s for s in src if s != "routing.schema.json"], d) for src, d in stage.copies]
    workdir = copy_context(BuildStage(trimmed, stage.workdir, stage.extras), tmp_path / "ctx")
    argv = [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(workdir)]
    result = run(argv)
    assert result.returncode != 0
    assert "routing.schema.json" in result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_image_wheel_runs_help_run_and_health(image_venv: Path, tmp_path: Path) -> None:
    bus = str(image_venv / "bin" / "lgsp-bus")
    # Only what the image has: no checkout on the path, no config or broker of the caller's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LGSP_", "PYTHON"))}
    env["HOME"] = str(tmp_path)
    cwd = tmp_path / "workdir"
    cwd.mkdir()

    helped = run([bus, "--help"], env=env, cwd=cwd)
    assert helped.returncode == 0, helped.stderr
    assert "health" in helped.stdout
    assert "run" in helped.stdout

    # The schema the wheel ships beside its default routing is the one the code generates.
    site = next((image_venv / "lib").glob("python3*/site-packages"))
    shipped = site / "bus" / "routing.schema.json"
    assert (site / "bus" / "default_routing.yaml").is_file()
    checked = run([bus, "config", "schema", "--check", str(shipped)], env=env, cwd=cwd)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    down = run([bus, "health", "--url", url, "--timeout", "2"], env=env, cwd=cwd)
    assert down.returncode == 1, down.stdout
    assert "unreachable" in down.stdout

    proc = await asyncio.create_subprocess_exec(
        bus,
        "run",
        "--no-sim",
        "--no-watch",
        "--port",
        str(port),
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        health = run([bus, "health", "--url", url], env=env, cwd=cwd)
        for _ in range(200):  # start-up bound, not a speed assertion
            if health.returncode == 0 or proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
            health = run([bus, "health", "--url", url], env=env, cwd=cwd)
        assert proc.returncode is None, "lgsp-bus run from the image wheel exited"
        assert health.returncode == 0, health.stdout
        assert f"{url} 200" in health.stdout
    finally:
        await terminate(proc)
    assert proc.returncode == 0
    assert proc.stderr is not None
    assert "Traceback" not in (await proc.stderr.read()).decode()
