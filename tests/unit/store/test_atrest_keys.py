"""``store.keys`` as the commands use them: ``lgsp-bus store keys|retire-keys`` after a
rotation, and start-up refusing a key it cannot use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from adapters.base import parse_routing
from bus.config import ConfigError
from bus.config.atrest import keyring_for
from bus.config.keys import key_problems
from bus.config.rules import config_warnings
from bus.sealing import Keyring
from bus.store import dead_letter_keyring, open_store
from tests.unit.admin.test_dlq import lgsp_bus

OLD, NEW = "old-at-rest-key-of-the-test-bus-01234567", "new-at-rest-key-of-the-test-bus-01234567"


def routing(tmp_path: Path, keys: list[tuple[str, str]]) -> Path:
    data = {
        "version": 1,
        "store": {"keys": [{"id": key_id, "key": f"env:{env}"} for key_id, env in keys]},
    }
    path = tmp_path / f"routing-{len(keys)}-{keys[0][0]}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


async def test_retire_keys_deletes_the_answers_of_a_dropped_key(tmp_path: Path) -> None:
    env = {**os.environ, "T_KEY_OLD": OLD, "T_KEY_NEW": NEW}
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    ring = Keyring.from_texts([("k2", NEW), ("k1", OLD)])
    store = open_store(url, ring)
    await store.connect()
    try:
        for i, key_id in enumerate(("k1", "k1", "k2")):
            store.keyring.current = key_id
            await store.message_begin("portal", f"req-{i}", "h", 3600)
            await store.message_finish("portal", f"req-{i}", 200, b'{"n":1}')
    finally:
        await store.aclose()

    both = routing(tmp_path, [("k2", "T_KEY_NEW"), ("k1", "T_KEY_OLD")])
    code, out, _ = await lgsp_bus(env, "store", "keys", "--config", str(both), "--store", url)
    assert code == 0
    assert out.splitlines() == ["k2\t1\tseals", "k1\t2\topens"]

    only_new = routing(tmp_path, [("k2", "T_KEY_NEW")])
    args = ("--config", str(only_new), "--store", url)
    code, out, _ = await lgsp_bus(env, "store", "keys", *args)
    assert out.splitlines() == ["k2\t1\tseals", "k1\t2\tretired (read as absent)"]
    code, out, _ = await lgsp_bus(env, "store", "retire-keys", *args)
    assert code == 0
    assert "deleted 2 stored answer(s)" in out
    code, out, _ = await lgsp_bus(env, "store", "keys", *args)
    assert out.splitlines() == ["k2\t1\tseals"]


async def test_start_up_refuses_a_short_or_missing_key(tmp_path: Path) -> None:
    env = {**os.environ, "T_KEY_SHORT": "too-short"}
    env.pop("T_KEY_MISSING", None)
    for var in ("T_KEY_SHORT", "T_KEY_MISSING"):
        path = routing(tmp_path, [("k1", var)])
        code, _, err = await lgsp_bus(env, "run", "--config", str(path), "--no-sim")
        assert code == 2, err
        assert "store.keys" in err


def test_validate_checks_key_length_and_warns_a_tls_gateway_without_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_KEY_SHORT", "too-short")
    short = parse_routing({"store": {"keys": [{"id": "k1", "key": "env:T_KEY_SHORT"}]}})
    assert [path for path, _ in key_problems(short)] == [("store", "keys", 0, "key")]
    tls = {"cert_file": str(tmp_path / "c.pem"), "key_file": str(tmp_path / "k.pem")}
    warned = parse_routing({"gateway": {"tls": tls}})
    assert any("store.keys is not set" in str(i) for i in config_warnings(warned, None))
    assert not any("store.keys" in str(i) for i in config_warnings(parse_routing({}), None))
    with pytest.raises(ConfigError):  # the same key id twice
        parse_routing(
            {"store": {"keys": [{"id": "k1", "key": "env:A"}, {"id": "k1", "key": "env:B"}]}}
        )


def test_without_store_keys_postgres_answers_are_sealed_under_the_audit_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several gateways share one PostgreSQL store: each must open the others' answers, so
    the default there is a key every instance has (derived from audit.subject_key), not one
    of each process; SQLite keeps its key file; store.keys always wins."""
    monkeypatch.setenv("T_ATREST_AUDIT", "an-audit-key-of-the-test-bus-0123456789")
    monkeypatch.setenv("T_ATREST_KEY", NEW)
    audit = {"audit": {"subject_key": "env:T_ATREST_AUDIT"}}
    config = parse_routing({"version": 1, **audit})
    pg, lite = "postgresql://127.0.0.1/test", "sqlite:///bus.sqlite3"
    ring = keyring_for(config, pg)
    other = keyring_for(parse_routing({"version": 1, **audit}), pg)
    assert ring is not None
    assert other is not None
    assert ring.ids == ("audit",)
    key_id, sealed = ring.seal(("portal", "r1"), b"answer")
    assert other.open(key_id, ("portal", "r1"), sealed) == b"answer"  # another gateway
    assert keyring_for(config, lite) is None  # the SQLite store's key file
    assert keyring_for(parse_routing({"version": 1}), pg) is None  # no key to share
    keyed = parse_routing(
        {"version": 1, **audit, "store": {"keys": [{"id": "k1", "key": "env:T_ATREST_KEY"}]}}
    )
    chosen = keyring_for(keyed, pg)
    assert chosen is not None
    assert chosen.ids == ("k1",)


def test_opening_dead_letters_makes_no_key_file_where_nothing_was_sealed(tmp_path: Path) -> None:
    """The dlq commands only open letters: without a key file beside the SQLite store there
    is nothing sealed to open, so none is made (it used to appear in whatever directory the
    command ran in); a worker, which seals, makes it."""
    config = parse_routing({"version": 1})
    url = f"sqlite:///{tmp_path / 'bus.sqlite3'}"
    assert dead_letter_keyring(config, url, make=False) is None
    assert not (tmp_path / "bus.sqlite3.key").exists()
    made = dead_letter_keyring(config, url)
    assert made is not None
    assert (tmp_path / "bus.sqlite3.key").exists()
    opened = dead_letter_keyring(config, url, make=False)
    assert opened is not None
    assert opened.ids == made.ids
