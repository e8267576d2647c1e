"""The OpenAPI schema (drf-spectacular): generated without a warning, valid OpenAPI 3,
covering every management and billing endpoint, served with its docs page."""

import json
import re
import subprocess

import pytest
from openapi_spec_validator import validate

from tests.api.test_management_api import ROUTES
from tests.conftest import PYTHON, ROOT


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


@pytest.mark.timeout(120)
def test_schema_generates_without_warnings(server_env, tmp_path):
    out = tmp_path / "schema.yaml"
    result = subprocess.run(
        [PYTHON, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(out)],
        cwd=ROOT,
        env=server_env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.stat().st_size > 10_000


def test_schema_is_valid_openapi_and_covers_every_route(db, schema):
    validate(schema)
    documented = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
        if method in ("get", "post", "patch", "put", "delete")
    }
    for method, template, _who in ROUTES:
        path = re.sub(r"\{[a-z]+\}", "{id}", template)
        assert any(
            m == method and re.sub(r"\{[a-z_]+\}", "{id}", p) == path for m, p in documented
        ), (method, template)
    schemes = schema["components"]["securitySchemes"]
    assert schemes["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "tga-…",
        "description": "A tenant admin token (never an inference key tg-…).",
    }
    # The backend credential is write-only: in requests, never in responses.
    components = schema["components"]["schemas"]
    assert "credential" in components["BackendRequest"]["properties"]
    assert "credential" not in components["Backend"]["properties"]
    assert "secret" in components["ApiKeyWithSecret"]["properties"]
    assert "secret" not in components["ApiKey"]["properties"]


def test_docs_page_is_served_from_the_sidecar(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui-bundle.js" in html and "/static/drf_spectacular_sidecar/" in html
    bundle = re.search(r'src="([^"]+swagger-ui-bundle\.js)"', html).group(1)
    asset = client.get(bundle)
    assert asset.status_code == 200
