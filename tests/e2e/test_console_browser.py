"""The operators' console in a real headless Chromium against a running bus on the real
RabbitMQ: each role logs in, each page renders live data, a replay done in the browser
reaches the upstream, a config error is shown at its line, roles see only their buttons
and get 403 from the API, a citizen's name holding markup renders inert, forged POSTs
fail. Screenshots of each page go to .artifacts/screenshots/ (git-ignored).

One bus and one browser for the module; the tests run in order (pytest keeps a module's
order) and each builds on the state the previous left: that is the operators' day."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.common.exceptions import WebDriverException
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.console import (
    ROLES,
    SCREENSHOTS,
    ConsoleBus,
    browser,
    console_bus,
    dead_letter,
    lookup_body,
    session_login,
)
from tests.support.rabbit import TestVhost

pytestmark = pytest.mark.rabbitmq

SUBJECT = "001193083060"
MARKUP = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


@pytest.fixture(scope="module")
def bus() -> Iterator[ConsoleBus]:
    vhost = TestVhost()
    try:
        with console_bus(vhost.url()) as running:
            yield running
    finally:
        vhost.close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(downloads: Path) -> Iterator[WebDriver]:
    with browser(downloads) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def letters(bus: ConsoleBus) -> dict[str, str]:
    """Traffic to chart and to audit, and two dead letters: one to replay, one whose
    citizen's name holds markup."""
    for i in range(3):
        assert bus.call(lookup_body(f"traffic-{i}-{uuid.uuid4().hex[:8]}")).status_code == 200
    r = bus.call(lookup_body(f"subject-{uuid.uuid4().hex[:8]}", subject=SUBJECT))
    assert r.status_code in (200, 404), r.text
    replayable = dead_letter(bus, lookup_body(f"dead-{uuid.uuid4().hex[:8]}"), "upstream down")
    body = lookup_body(f"xss-{uuid.uuid4().hex[:8]}", subject=SUBJECT)
    body["by_person"]["full_name"] = MARKUP
    hostile = dead_letter(bus, body, "no answer")
    return {"replay": replayable, "xss": hostile}


def submit(driver: WebDriver, element: WebElement) -> None:
    """Click a button that loads a page, and wait until the new page has loaded (the old
    page's window carried a mark the new one has not)."""
    driver.execute_script("window.__lgspOld = true")
    element.click()

    def loaded(d: Any) -> bool:
        try:
            return bool(
                d.execute_script(
                    "return window.__lgspOld === undefined && document.readyState === 'complete'"
                )
            )
        except WebDriverException:  # between two documents
            return False

    WebDriverWait(driver, 30).until(loaded)


def shot(driver: WebDriver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def login(driver: WebDriver, bus: ConsoleBus, role: str) -> None:
    driver.get(bus.admin + "admin/console/login")
    # The page's own stylesheet and script loaded, and the CSP blocked nothing: the browser
    # logged no error (a favicon the admin port does not serve aside).
    assert driver.execute_script("return getComputedStyle(document.body).margin") == "0px"
    logged: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    errors = [e for e in logged if "favicon" not in e["message"]]
    assert not errors, errors
    driver.find_element(By.ID, "key").send_keys(bus.keys[role])
    submit(driver, driver.find_element(By.ID, "login"))
    assert driver.find_element(By.ID, "who").text.startswith(ROLES[role])


def logout(driver: WebDriver) -> None:
    submit(driver, driver.find_element(By.ID, "logout"))
    assert driver.find_elements(By.ID, "key")


def go(driver: WebDriver, bus: ConsoleBus, page: str) -> None:
    driver.get(bus.admin + "admin/console/" + page)


def buttons(driver: WebDriver, css: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, css)


def letter_row(driver: WebDriver, letter_id: str) -> list[WebElement]:
    return driver.find_elements(By.ID, f"letter-{letter_id}")


def test_viewer_reads_every_page_and_may_change_nothing(
    driver: WebDriver, bus: ConsoleBus, letters: dict[str, str]
) -> None:
    login(driver, bus, "viewer")
    # Overview, in Vietnamese by default: live counters drawn as charts.
    assert driver.find_element(By.TAG_NAME, "h1").text == "Tổng quan"
    row = driver.find_element(By.ID, "svc-civil-status")
    assert int(row.find_element(By.CSS_SELECTOR, ".requests").text) >= 4
    bars = row.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar-requests")
    assert bars
    assert float(bars[-1].get_attribute("height") or 0) > 0  # the minute under way
    assert "breaker-closed" in (
        row.find_element(By.CSS_SELECTOR, ".badge").get_attribute("class") or ""
    )
    assert "đã kết nối" in driver.find_element(By.ID, "card-broker").text
    assert driver.find_element(By.ID, "config-version").text
    shot(driver, "01-overview-vi")
    submit(driver, driver.find_element(By.ID, "lang-en"))
    assert driver.find_element(By.TAG_NAME, "h1").text == "Overview"
    shot(driver, "02-overview-en")
    submit(driver, driver.find_element(By.ID, "lang-vi"))

    go(driver, bus, "services")
    grants = driver.find_element(By.ID, "grants-demo").find_elements(By.CSS_SELECTOR, "td.yes")
    assert len(grants) == 3  # civil-status/lookup, population/lookup and verify
    consumer = driver.find_element(By.ID, "consumer-demo").text
    assert "key-0" in consumer
    assert int(consumer.split()[-1]) >= 4  # usage since start
    assert bus.demo_key not in driver.page_source  # a key's label, never the key
    shot(driver, "03-services")

    go(driver, bus, "deadletters")
    assert letter_row(driver, letters["replay"])
    assert letter_row(driver, letters["xss"])
    assert not buttons(driver, "button.replay")
    assert not buttons(driver, "button.purge")
    shot(driver, "04-deadletters-viewer")
    submit(
        driver, letter_row(driver, letters["xss"])[0].find_element(By.CSS_SELECTOR, "button.show")
    )
    assert "***" in driver.find_element(By.ID, "letter-body").text
    assert "onerror" not in driver.page_source
    assert not driver.find_elements(By.ID, "reveal")  # a viewer may not reveal

    assert not driver.find_elements(By.ID, "nav-audit")
    go(driver, bus, "config")
    assert "services:" in driver.find_element(By.ID, "running").text
    logout(driver)

    # The API says no as plainly as the page hides the button.
    replay = {"service": "civil-status", "ids": [letters["replay"]]}
    for path, body in (
        ("deadletters/replay", replay),
        ("deadletters/purge", replay),
        ("audit/search", {"subject_id": SUBJECT}),
        ("deadletters/show", {"service": "civil-status", "id": letters["xss"], "reveal": True}),
    ):
        r = bus.api("viewer", path, body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "FORBIDDEN_ROLE"
    assert {row["id"] for row in bus.api("viewer", "deadletters").json()["letters"]} >= set(
        letters.values()
    )


def test_auditor_searches_by_citizen_reveals_inertly_and_downloads_evidence(
    driver: WebDriver, bus: ConsoleBus, letters: dict[str, str], downloads: Path
) -> None:
    login(driver, bus, "auditor")
    go(driver, bus, "audit")
    submit(driver, driver.find_element(By.ID, "verify"))
    assert "Toàn vẹn" in driver.find_element(By.ID, "verify-result").text
    driver.find_element(By.ID, "subject_id").send_keys(SUBJECT)
    submit(driver, driver.find_element(By.ID, "search-go"))
    assert SUBJECT not in driver.current_url
    assert SUBJECT not in driver.page_source
    records = driver.find_elements(By.CSS_SELECTOR, "#records tbody tr")
    # Every exchange whose answer returned the citizen (21.9): the lookup by their ID, and
    # the three lookups by registration whose record is theirs.
    kinds = [re.search(r"\b(subject|traffic)-", row.text) for row in records]
    assert sorted(m.group(1) if m else row.text for m, row in zip(kinds, records, strict=True)) == [
        "subject",
        "traffic",
        "traffic",
        "traffic",
    ]
    assert all("civil-status.lookup" in row.text for row in records)
    shot(driver, "05-audit-search")
    records[0].find_element(By.CSS_SELECTOR, "button.evidence").click()
    bundle = _downloaded(downloads)
    assert '"lgsp-bus audit evidence v1"' in bundle
    assert '"verified": true' in bundle

    go(driver, bus, "deadletters")
    assert not buttons(driver, "button.replay")  # an auditor changes no queue
    submit(
        driver, letter_row(driver, letters["xss"])[0].find_element(By.CSS_SELECTOR, "button.show")
    )
    submit(driver, driver.find_element(By.ID, "reveal"))
    body = driver.find_element(By.ID, "letter-body")
    assert json.dumps(MARKUP) in body.text  # shown as text (a JSON string) ...
    assert not body.find_elements(By.TAG_NAME, "img")  # ... never as markup
    assert not body.find_elements(By.TAG_NAME, "script")
    assert driver.execute_script("return window.__xss === undefined")
    shot(driver, "06-letter-revealed")
    logout(driver)

    r = bus.api("auditor", "config/apply", {"text": "version: 1\n", "base_version": "x"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "FORBIDDEN_ROLE"
    r = bus.api("auditor", "deadletters/purge", {"service": "civil-status", "ids": ["x"]})
    assert r.status_code == 403


def _downloaded(folder: Path) -> str:
    for _ in range(200):  # the browser writes it in its own time: wait for the file
        done = [p for p in folder.glob("evidence-*.json") if p.stat().st_size]
        if done:
            return done[0].read_text(encoding="utf-8")
        time.sleep(0.05)
    raise AssertionError("no evidence bundle was downloaded")


def test_operator_replays_in_the_browser_and_it_reaches_the_upstream(
    driver: WebDriver, bus: ConsoleBus, letters: dict[str, str]
) -> None:
    before = bus.upstream_requests()
    login(driver, bus, "operator")
    go(driver, bus, "deadletters")
    row = letter_row(driver, letters["replay"])[0]
    row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    submit(driver, buttons(driver, "button.replay")[0])
    assert letters["replay"] in driver.find_element(By.ID, "confirm").text  # confirm first
    assert bus.upstream_requests() == before
    shot(driver, "07-replay-confirm")
    submit(driver, driver.find_element(By.ID, "confirm-yes"))
    assert "OK" in driver.find_element(By.ID, "replayed").text
    assert bus.upstream_requests() == before + 1
    assert not letter_row(driver, letters["replay"])
    shot(driver, "08-replayed")

    # Purge the hostile letter, with its confirmation step.
    letter_row(driver, letters["xss"])[0].find_element(By.CSS_SELECTOR, "input").click()
    submit(driver, buttons(driver, "button.purge")[0])
    submit(driver, driver.find_element(By.ID, "confirm-yes"))
    assert driver.find_element(By.ID, "purged")
    assert not letter_row(driver, letters["xss"])
    assert not driver.find_elements(By.ID, "nav-audit")
    logout(driver)

    r = bus.api("operator", "audit/search", {"subject_id": SUBJECT})
    assert r.status_code == 403  # separation of duties: operators do not search citizens


def test_operator_sees_a_config_error_at_its_line_then_applies_a_revocation(
    driver: WebDriver, bus: ConsoleBus, tmp_path: Path
) -> None:
    running = bus.config_path.read_text(encoding="utf-8")
    lines = running.splitlines()
    timeout_line = next(i for i, line in enumerate(lines) if "timeout_s:" in line)
    broken = list(lines)
    broken[timeout_line] = broken[timeout_line].split(":")[0] + ": -3"
    login(driver, bus, "operator")
    go(driver, bus, "config")
    version = driver.find_element(By.ID, "config-version").text
    # Uploaded as a file: the console's script reads it into the text area.
    upload = tmp_path / "proposed.yaml"
    upload.write_text("\n".join(broken) + "\n", encoding="utf-8")
    driver.find_element(By.ID, "upload").send_keys(str(upload))
    area = driver.find_element(By.ID, "text")
    WebDriverWait(driver, 30).until(lambda d: area.get_attribute("value"))
    assert area.get_attribute("value") == upload.read_text(encoding="utf-8")
    submit(driver, driver.find_element(By.ID, "check"))
    error = driver.find_element(By.CSS_SELECTOR, "#errors tr.config-error")
    assert error.find_element(By.CSS_SELECTOR, ".where").text.startswith(f"{timeout_line + 1}:")
    marked = driver.find_element(By.ID, f"line-{timeout_line + 1}")
    assert "bad-line" in (marked.get_attribute("class") or "")
    assert not driver.find_elements(By.ID, "apply")
    shot(driver, "09-config-error")

    revoked = running.replace("population: [lookup, verify]", "population: [lookup]")
    assert revoked != running
    _paste(driver, revoked)
    changes = driver.find_elements(By.CSS_SELECTOR, "#changes li")
    assert "revoked" in changes[0].text
    assert "population/verify" in changes[0].text
    shot(driver, "10-config-diff")
    submit(driver, driver.find_element(By.ID, "apply"))
    assert driver.find_element(By.ID, "applied")
    assert driver.find_element(By.ID, "config-version").text != version
    assert driver.find_element(By.ID, "last-outcome").text == "applied"
    assert bus.config_path.read_text(encoding="utf-8") == revoked
    shot(driver, "11-config-applied")
    logout(driver)


def _paste(driver: WebDriver, text: str) -> None:
    area = driver.find_element(By.ID, "text")
    driver.execute_script("arguments[0].value = arguments[1]", area, text)
    submit(driver, driver.find_element(By.ID, "check"))


def test_every_action_is_in_the_audit_trail(bus: ConsoleBus) -> None:
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    r = bus.api("auditor", "audit/search", {"from": since})
    assert r.status_code == 200, r.text
    done = {(rec["action"], rec["actor"]) for rec in r.json()["records"] if rec["kind"] == "admin"}
    assert {
        ("console.login", "xem-lan"),
        ("dlq.show", "kt-mai"),
        ("audit.query", "kt-mai"),
        ("audit.export", "kt-mai"),
        ("audit.verify", "kt-mai"),
        ("dlq.replay", "vh-hanh"),
        ("dlq.purge", "vh-hanh"),
        ("config.reload", "vh-hanh"),
    } <= done
    shows = [rec for rec in r.json()["records"] if rec["action"] == "dlq.show"]
    assert {rec["detail"]["reveal"] for rec in shows} == {False, True}


def test_an_old_style_key_is_an_operator(bus: ConsoleBus) -> None:
    me = bus.api("old", "whoami").json()
    assert (me["name"], me["role"]) == ("cu-an", "operator")
    assert "config.apply" in me["may"]
    assert "audit.search" not in me["may"]


class _Forger(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        page = (
            f'<form id="f" method="post" action="{self.target}">'
            '<input name="action" value="purge"><input name="service" value="civil-status">'
            '<input name="ids" value="all"><input name="confirm" value="1"></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: Any) -> None:
        pass


def test_forged_posts_fail(driver: WebDriver, bus: ConsoleBus) -> None:
    target = dead_letter(bus, lookup_body(f"csrf-{uuid.uuid4().hex[:8]}"), "x")
    # A page on another port of the same host (same site: the browser sends the session
    # cookie) makes the logged-in operator's browser post a purge: no token, refused.
    _Forger.target = bus.admin + "admin/console/deadletters/act"
    forger = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forger)
    forger.daemon_threads = True
    threading.Thread(target=forger.serve_forever, daemon=True).start()
    try:
        login(driver, bus, "operator")
        driver.get(f"http://127.0.0.1:{forger.server_port}/")
        WebDriverWait(driver, 30).until(expected_conditions.url_to_be(_Forger.target))
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "error"))
        assert "CSRF_FAILED" in driver.find_element(By.ID, "error").text
        go(driver, bus, "deadletters")
        assert letter_row(driver, target)
        logout(driver)
    finally:
        forger.shutdown()
        forger.server_close()

    # With the session cookie but without the token, or from another origin: 403.
    http_session, csrf = session_login(bus, "operator")
    url = bus.admin + "admin/console/deadletters/act"
    form = {"action": "purge", "service": "civil-status", "ids": target, "confirm": "1"}
    r = http_session.post(url, data=form, timeout=10)
    assert r.status_code == 403
    assert "CSRF_FAILED" in r.text
    evil = {"Origin": "http://evil.example"}
    r = http_session.post(url, data={**form, "csrf": csrf}, headers=evil, timeout=10)
    assert r.status_code == 403
    r = http_session.post(
        bus.admin + "admin/api/deadletters/purge",
        json={"service": "civil-status", "ids": [target]},
        timeout=10,
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "CSRF_FAILED"
    assert target in {row["id"] for row in bus.api("viewer", "deadletters").json()["letters"]}
    # The token does work: the same purge with it succeeds.
    r = http_session.post(url, data={**form, "csrf": csrf}, timeout=10)
    assert r.status_code == 200
    assert target not in {row["id"] for row in bus.api("viewer", "deadletters").json()["letters"]}


def test_pages_carry_the_security_headers(bus: ConsoleBus) -> None:
    http_session, _ = session_login(bus, "viewer")
    r = http_session.get(bus.admin + "admin/console/", timeout=10)
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"
    cookie = next(c for c in http_session.cookies if c.name == "lgsp_console")
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert "<script>" not in r.text  # no inline script anywhere
    doc = requests.get(bus.gateway + "openapi.json", timeout=10).json()
    assert "/admin/api/deadletters/replay" in doc["paths"]
