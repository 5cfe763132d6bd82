"""The OpenAPI document: valid, and a true list of the API; its interactive docs served from the studio itself."""

from __future__ import annotations

import re

import pytest
from django.urls import get_resolver
from openapi_spec_validator import validate

from tests.test_access_matrix import ROUTES, all_patterns

pytestmark = pytest.mark.django_db


@pytest.fixture
def document(client) -> dict:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_the_document_is_valid_openapi(document):
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_api_route_is_in_the_document_with_its_methods(document):
    documented = {
        (path, method.upper()) for path, operations in document["paths"].items() for method in operations
    }
    expected = set()
    for name, route in all_patterns():
        if not name.startswith("api:") or name in ("api:openapi-json", "api:openapi-view", "api:api-root"):
            continue
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        expected |= {(path, method) for method in ROUTES[name]}
    assert expected == documented


def test_every_route_documents_its_errors_as_json(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            errors = {code: answer for code, answer in operation["responses"].items() if code.startswith("4")}
            assert errors, f"{method} {path} documents no error"
            for answer in errors.values():
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path}"


def test_both_authentications_are_described(document):
    schemes = document["components"]["securitySchemes"]
    kinds = {(scheme["type"], scheme.get("scheme", scheme.get("in"))) for scheme in schemes.values()}
    assert kinds == {("apiKey", "header"), ("http", "bearer")}


def test_the_docs_page_loads_its_assets_from_the_studio(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    page = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(asset.startswith("/static/") for asset in assets), assets
    assert "cdn" not in page.lower()
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def test_the_api_root_leads_to_the_docs(client):
    response = client.get("/api/v1/")
    assert response.status_code == 302 and response.url == "/api/v1/docs"


def test_the_resolver_knows_every_documented_route(document):
    resolver = get_resolver()
    for path in document["paths"]:
        concrete = re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1).endswith("id") or m.group(1) == "version" else "x",
                          path)
        assert resolver.resolve(concrete), path
