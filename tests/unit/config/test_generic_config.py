"""An operator's view: the README example of generic services validates, serves, and a
broken copy is explained by ``lgsp-bus config validate`` with YAML paths and lines."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from adapters.base import load_routing, parse_routing
from bus.cli.main import main
from bus.config.source import YamlDocument
from tests.fixtures.generic_upstreams import (
    SOAP_PASSWORD,
    SOAP_USER,
    VSS_PASSWORD,
    VSS_USER,
    business_registry_app,
    social_insurance_app,
)
from tests.support.paths import FIXTURES
from tests.support.stack import new_secret, running_bus, serve_app

EXAMPLE = FIXTURES / "generic_routing.yaml"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # main() configures structlog to print to the (captured) stdout of its test.
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> str:
    key = new_secret()
    monkeypatch.setenv("LGSP_MOTCUA_KEY", key)
    monkeypatch.setenv("DKKD_PASSWORD", SOAP_PASSWORD)
    monkeypatch.setenv("VSS_PASSWORD", VSS_PASSWORD)
    return key


def example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8").replace("@FIXTURES@", str(FIXTURES))


def test_example_validates(
    tmp_path: Path, secrets: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(example_text(), encoding="utf-8")
    assert load_routing(path).services["business-registry"].adapter == "soap"
    assert main(["config", "validate", str(path)]) == 0
    assert "OK (2 services, 2 upstreams" in capsys.readouterr().out


BROKEN = {
    "operation: GetEnterpriseInfo": "operation: GetEnterprise",
    "EnterpriseCode: enterprise_code": "EnterpriseCode: enterprise_cod",
    "data_as_of: DataAsOf": "data_as_of: DataAsAt",
    "ngayHieuLuc: {from: as_of,": "ngayHieuLuc: {from: as_at,",
}


def test_broken_copy_is_explained_with_paths_and_lines(
    tmp_path: Path, secrets: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = example_text()
    for old, new in BROKEN.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["config", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: 2 error(s)" in out
    lines = [line.strip() for line in out.splitlines()[1:]]
    soap_line = text.splitlines().index("  business-registry:") + 1
    rest_line = text.splitlines().index("  social-insurance:") + 1
    assert lines == [
        f"services.business-registry (line {soap_line}:3): operations.lookup.options."
        "operation: the WSDL has no operation 'GetEnterprise' on port EnterpriseSoap11Port "
        "(it has: CheckEnterpriseStatus, GetEnterpriseInfo)",
        f"services.social-insurance (line {rest_line}:3): operations.lookup.options.query."
        "ngayHieuLuc: 'as_at' is not a request field (declare it under fields, or use "
        "request_id, caller.*, purpose.*)",
    ]
    # With the operation name right, the mapping is checked against the WSDL too.
    path.write_text(text.replace("operation: GetEnterprise ", "operation: GetEnterpriseInfo "))
    assert main(["config", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "request.EnterpriseCode: 'enterprise_cod' is not a request field" in out
    assert "response.data_as_of: 'DataAsAt': no element 'DataAsAt' here (it has: " in out


def test_missing_wsdl_file(
    tmp_path: Path, secrets: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(example_text().replace("BusinessRegistry.wsdl", "Registry.wsdl"))
    assert main(["config", "validate", str(path)]) == 1
    assert "options.wsdl: WSDL file /" in capsys.readouterr().out


async def test_the_example_serves(secrets: str) -> None:
    data: dict[str, Any] = yaml.safe_load(example_text())
    async with (
        serve_app(business_registry_app()) as registry_url,
        serve_app(social_insurance_app()) as insurance_url,
    ):
        data["upstreams"]["dkkd"].update(url=registry_url + "dkkd/enterprise")
        data["upstreams"]["dkkd"]["auth"]["username"] = SOAP_USER
        data["upstreams"]["vss"].update(url=insurance_url)
        data["upstreams"]["vss"]["auth"]["username"] = VSS_USER
        config = parse_routing(data, YamlDocument(data))
        async with running_bus(config, None, secrets) as bus:
            status, reply = await bus.post(
                "/v1/business-registry/lookup",
                {"request_id": "req-00000001", "enterprise_code": "0101234567"},
            )
            assert status == 200, reply
            assert reply["enterprise"]["status"] == "ACTIVE"
            status, reply = await bus.post(
                "/v1/social-insurance/lookup",
                {
                    "request_id": "req-00000002",
                    "caller": {
                        "system_id": "motcua",
                        "unit_code": "H01",
                        "officer_id": "001085000123",
                    },
                    "purpose": {
                        "procedure_code": "1.001234",
                        "dossier_id": "HS-1",
                        "legal_basis": "LEGAL_DUTY",
                    },
                    "subject": {"id_number": "001090012345"},
                },
            )
            assert status == 200, reply
            assert reply["participant"]["status"] == "ACTIVE"


@pytest.mark.parametrize(
    "name",
    [
        "adapters.generic.shared",
        "adapters.generic.mapping",
        "adapters.generic.reqschema",
        "adapters.rest.kind",
        "adapters.soap.kind",
        "adapters.soap.check",
        "adapters.common.soap",
        "adapters.generic.transforms",
    ],
)
def test_public_api_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert all(hasattr(module, attr) for attr in module.__all__)
