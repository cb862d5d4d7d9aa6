"""For the console tests: a real ``lgsp-bus run`` on RabbitMQ with role-bearing admin keys
on an admin port of its own, a headless Chromium driven by Selenium, dead letters put in
a DLQ as the broker would, and a requests-based login."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import requests

from bus.broker.base import dlq_name
from bus.broker.deadletters import dead_letter_headers
from bus.envelope import Request, encode_request
from tests.support.paths import REPO

__all__ = [
    "ROLES",
    "SCREENSHOTS",
    "ConsoleBus",
    "browser",
    "console_bus",
    "dead_letter",
    "lookup_body",
    "session_login",
]

ROOT = REPO
SCRIPT = Path(sys.executable).parent / "lgsp-bus"
SCREENSHOTS = ROOT / ".artifacts" / "screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ROLES = {"viewer": "xem-lan", "operator": "vh-hanh", "auditor": "kt-mai", "old": "cu-an"}
"""Role (``old``: a key without a role) → the admin key's name."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ConsoleBus:
    """The running bus: its URLs, keys and simulator port."""

    gateway: str
    admin: str
    sim: str
    amqp_url: str
    config_path: Path
    demo_key: str
    keys: dict[str, str] = field(default_factory=dict)

    def call(self, body: dict[str, Any]) -> requests.Response:
        """A consumer's call of civil-status/lookup."""
        return requests.post(
            self.gateway + "v1/civil-status/lookup",
            json=body,
            headers={"Authorization": f"Bearer {self.demo_key}"},
            timeout=30,
        )

    def api(self, role: str, path: str, body: Any = None) -> requests.Response:
        """``/admin/api/<path>`` with the role's bearer key (POST when ``body`` is given)."""
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        url = self.admin + "admin/api/" + path
        if body is None:
            return requests.get(url, headers=headers, timeout=30)
        return requests.post(url, json=body, headers=headers, timeout=60)

    def upstream_requests(self) -> int:
        """Requests the civil-status simulator has served."""
        stats = requests.get(self.sim + "_sim/stats", timeout=10).json()
        return int(stats["requests"])


def lookup_body(request_id: str, *, subject: str | None = None) -> dict[str, Any]:
    """A civil-status lookup: by registration, or by the person with ID ``subject``."""
    body: dict[str, Any] = {
        "request_id": request_id,
        "record_type": "BIRTH",
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
        "purpose": {
            "procedure_code": "1.001234",
            "dossier_id": "HS-2026-0001",
            "legal_basis": "LEGAL_DUTY",
        },
    }
    if subject is None:
        body["by_registration"] = {"authority_code": "00001", "number": "1"}
    else:
        body["by_person"] = {"id_number": subject}
    return body


def _config(tmp: Path, sim_port: int, admin_port: int) -> Path:
    text = (ROOT / "routing.yaml").read_text(encoding="utf-8")
    text = text.replace("http://127.0.0.1:8482/", f"http://127.0.0.1:{sim_port}/")
    text = text.replace("http://127.0.0.1:8481/", f"http://127.0.0.1:{free_port()}/")
    text += f"""
admin:
  port: {admin_port}
  api_keys:
    - {{name: xem-lan, key: env:LGSP_T_VIEWER, role: viewer}}
    - {{name: vh-hanh, key: env:LGSP_T_OPERATOR, role: operator}}
    - {{name: kt-mai, key: env:LGSP_T_AUDITOR, role: auditor}}
    - {{name: cu-an, key: env:LGSP_T_OLD}}
"""
    path = tmp / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _wait(url: str, proc: subprocess.Popen[bytes], bound_s: float = 60) -> None:
    end = time.monotonic() + bound_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"lgsp-bus run exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@contextmanager
def console_bus(amqp_url: str) -> Iterator[ConsoleBus]:
    """``lgsp-bus run`` on ``amqp_url`` with the console on its own admin port."""
    with tempfile.TemporaryDirectory(prefix="lgsp-console-") as tmp:
        port, sim_port, admin_port = free_port(), free_port(), free_port()
        config = _config(Path(tmp), sim_port, admin_port)
        keys = {role: f"{role}-{uuid.uuid4().hex}" for role in ROLES}
        demo_key = uuid.uuid4().hex
        env = {
            **os.environ,
            "LGSP_AMQP_URL": amqp_url,
            "LGSP_STORE_URL": f"sqlite:///{tmp}/store.sqlite3",
            "LGSP_DEMO_API_KEY": demo_key,
            "LGSP_AUDIT_KEY": uuid.uuid4().hex,
            **{f"LGSP_T_{role.upper()}": key for role, key in keys.items()},
        }
        log = (Path(tmp) / "bus.log").open("wb")
        proc = subprocess.Popen(
            [str(SCRIPT), "run", "--config", str(config), "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            gateway, admin = f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{admin_port}/"
            _wait(gateway + "readyz", proc)
            _wait(admin + "admin/console/login", proc)
            yield ConsoleBus(
                gateway, admin, f"http://127.0.0.1:{sim_port}/", amqp_url, config, demo_key, keys
            )
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def dead_letter(bus: ConsoleBus, body: dict[str, Any], error: str) -> str:
    """Put a civil-status request in its DLQ as the broker would (reason delivery_limit);
    returns the letter's id."""
    req = Request(
        request_id=body["request_id"],
        service="civil-status",
        operation="lookup",
        consumer="demo",
        correlation_id=uuid.uuid4().hex,
        deadline=time.time() + 5,
        body=body,
    )
    raw, headers = encode_request(req)
    dead = dead_letter_headers(headers, "delivery_limit", error, 3)

    async def publish() -> None:
        connection = await aio_pika.connect(bus.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(raw, headers=dead, correlation_id=req.correlation_id),
                routing_key=dlq_name("civil-status"),
            )

    # On a thread of its own: asyncio.run here would leave this thread's event loop state
    # changed for the async tests that run after this module.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, publish()).result(60)
    return str(dead["x-lgsp-dead-id"])


def session_login(bus: ConsoleBus, role: str) -> tuple[requests.Session, str]:
    """Log in through the form with ``requests``; the session and a page's CSRF token."""
    http = requests.Session()
    form = http.get(bus.admin + "admin/console/login", timeout=10).text
    token = re.search(r'name="token" value="([^"]+)"', form)
    assert token is not None
    r = http.post(
        bus.admin + "admin/console/login",
        data={"token": token.group(1), "key": bus.keys[role]},
        timeout=10,
    )
    assert r.status_code == 200, r.text  # followed the 303 to the overview
    csrf = re.search(r'name="csrf" value="([^"]+)"', r.text)
    assert csrf is not None
    return http, csrf.group(1)


@contextmanager
def browser(downloads: Path) -> Iterator[Any]:
    """One headless Chromium (Debian's) for a test module; skipped outside CI without it."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = (
            "chromium/chromedriver are not installed (apt-get install --no-install-recommends "
            "chromium chromium-driver; ./test does it when run as root)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lgsp-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
