"""The ``lgsp-bus`` command as a user runs it: ``run`` end to end, ``sim``, ``--help``.

These start real subprocesses (the installed console script) on free loopback ports.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest

from bus.cli.main import build_parser
from tests.support.paths import REPO
from tests.support.stack import terminate

ROOT = REPO
SCRIPT = Path(sys.executable).parent / "lgsp-bus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def started(
    *args: str, env: dict[str, str], ready_url: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                try:
                    async with session.get(ready_url) as r:
                        if r.status < 500:
                            break
                except aiohttp.ClientError:
                    pass
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        yield proc
    finally:
        await terminate(proc)


async def test_run_serves_the_readme_example_and_stops_cleanly(tmp_path: Path) -> None:
    # The shipped routing.yaml, its simulators moved by flag and env (two dev instances
    # side by side): the run points the loopback upstreams at them, reloads included.
    port, sim_port = free_port(), free_port()
    config = ROOT / "routing.yaml"
    env = {
        "LGSP_SIM_POPULATION_PORT": str(free_port()),
        "LGSP_DEMO_API_KEY": "cli-test-key",
        "LGSP_AMQP_URL": "",
        # A store of its own: the default ./lgsp-bus.sqlite3 would replay an earlier run's
        # answer to the same request_id (idempotency) and the worker would not be called.
        "LGSP_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
    }
    base = f"http://127.0.0.1:{port}/"
    async with started(
        "--log-format",
        "json",
        "run",
        "--config",
        str(config),
        "--port",
        str(port),
        "--civil-status-sim-port",
        str(sim_port),
        env=env,
        ready_url=base + "readyz",
    ) as proc:
        body = {
            "request_id": "demo-0001-birth",
            "record_type": "BIRTH",
            "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
            "purpose": {
                "procedure_code": "1.001234",
                "dossier_id": "HS-2026-0001",
                "legal_basis": "LEGAL_DUTY",
            },
            "by_registration": {"authority_code": "00001", "number": "1"},
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                base + "v1/civil-status/lookup",
                json=body,
                headers={"Authorization": "Bearer cli-test-key", "X-Request-Id": "trace-cli-1"},
            ) as r,
        ):
            reply = await r.json()
        assert r.status == 200, reply
        assert reply["status"] == "FOUND"
        assert reply["registration"]["authority_code"] == "00001"
        proc.send_signal(signal.SIGTERM)
        started_stop = time.monotonic()
        code = await asyncio.wait_for(proc.wait(), 20)
        assert code == 0
        assert time.monotonic() - started_stop < 10
        assert proc.stdout is not None
        assert proc.stderr is not None
        out = (await proc.stdout.read()).decode()
        err = (await proc.stderr.read()).decode()
    assert f"gateway listening on http://127.0.0.1:{port}/" in out
    assert f"simulator civil-status  http://127.0.0.1:{sim_port}/" in out
    assert f"simulator population    http://127.0.0.1:{env['LGSP_SIM_POPULATION_PORT']}/" in out
    assert "Bearer $LGSP_DEMO_API_KEY" in out  # the newcomer is told how to call it
    assert "cli-test-key" not in out  # 21.15: a key the operator set is never echoed
    events = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    served = [e for e in events if e.get("event") == "worker.request_served"]
    # One correlation id follows the request across the broker into the worker's log.
    assert served
    assert served[0]["correlation_id"] == "trace-cli-1"
    assert served[0]["service"] == "civil-status"
    assert all("001193083060" not in line for line in err.splitlines())


async def test_gateway_without_broker_url_explains_itself(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        "gateway",
        "--config",
        str(ROOT / "routing.yaml"),
        env={**os.environ, "LGSP_AMQP_URL": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"set LGSP_AMQP_URL" in err


async def test_sim_civil_status_serves_with_its_token() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    env = {"LGSP_SIM_CIVIL_STATUS_TOKEN": "sim-cli-token"}
    async with (
        started("sim", "civil-status", "--port", str(port), env=env, ready_url=base + "_sim/stats"),
        aiohttp.ClientSession() as session,
    ):
        url = base + "api/hotich/khaisinh?noiDangKy=00001&so=1"
        async with session.get(url) as r:
            assert r.status == 401
        async with session.get(url, headers={"Authorization": "Bearer sim-cli-token"}) as r:
            data = await r.json()
        assert data["status"] == "1"
        assert data["data"][0]["so"] == "1"


@pytest.mark.parametrize(
    "argv",
    [[], ["run"], ["gateway"], ["worker"], ["sim"], ["config"], ["config", "validate"]],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lgsp-bus")
    assert len(out.splitlines()) > 3
    assert "Traceback" not in out


async def _exits(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        *args,
        env={**os.environ, "LGSP_AMQP_URL": "", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.parametrize("taken", ["--port", "--civil-status-sim-port"])
async def test_a_busy_port_is_one_line_naming_it_and_exit_2(tmp_path: Path, taken: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {"--port": free_port(), "--civil-status-sim-port": free_port(), taken: port}
        code, err = await _exits(
            "run",
            "--no-watch",
            *(item for flag, value in ports.items() for item in (flag, str(value))),
            env={
                "LGSP_SIM_POPULATION_PORT": str(free_port()),
                "LGSP_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
            },
        )
    assert code == 2, err
    (line,) = [line for line in err.splitlines() if "cannot listen" in line]
    assert f"127.0.0.1:{port}" in line
    assert taken in line
    assert "Traceback" not in err


async def test_config_diff_into_a_closed_pipe_is_no_error() -> None:
    """``lgsp-bus config diff a b | head``: the reader is gone before the diff is printed."""
    read, write = os.pipe()
    os.close(read)  # the reader has left already: every write gets EPIPE
    try:
        proc = await asyncio.create_subprocess_exec(
            str(SCRIPT),
            "config",
            "diff",
            str(ROOT / "routing.yaml"),
            str(ROOT / "deploy" / "k8s" / "routing.yaml"),
            stdout=write,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"BrokenPipeError" not in err, err.decode()
    assert b"Traceback" not in err
    assert proc.returncode == 0


def test_version_and_environment_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"lgsp-bus {version('lgsp-bus')}"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for name in ("LGSP_AMQP_URL", "LGSP_STORE_URL", "LGSP_CONFIG", "LGSP_AUDIT_KEY"):
        assert name in out
    for argv, wanted in (
        (["gateway"], ["--host HOST  address to listen on (default 127.0.0.1)", "(default 8080)"]),
        (["sim"], ["address to listen on (default 127.0.0.1)"]),
        (["run"], ["--civil-status-sim-port PORT", "LGSP_SIM_POPULATION_PORT"]),
    ):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for phrase in wanted:
            assert " ".join(phrase.split()) in text, (argv, phrase)


def test_dlq_help_is_for_operators_not_developers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dlq", "--help"])
    out = capsys.readouterr().out
    assert "replay" in out
    for markup in ("``", ":mod:", ":func:", "This module"):
        assert markup not in out
