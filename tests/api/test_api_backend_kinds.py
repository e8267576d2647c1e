"""The management API takes a backend kind only if the gateway has an adapter for it."""

import pytest

from tests.api.api_support import user_client

pytestmark = pytest.mark.django_db


def _create(org, kind: str):
    return user_client(org.staff).post(
        "/api/v1/staff/backends",
        {"name": "added", "kind": kind, "base_url": "http://127.0.0.1:9/v1"},
        format="json",
    )


def test_creating_a_backend_of_an_unknown_kind_is_a_400_on_the_kind(org):
    response = _create(org, "gemini")
    assert (response.status_code, list(response.json())) == (400, ["kind"])


def test_creating_a_backend_of_a_kind_registered_later_succeeds(org, extra_kind):
    response = _create(org, extra_kind)
    assert response.status_code == 201, response.content
