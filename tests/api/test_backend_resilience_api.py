"""A backend's first-byte deadline and breaker through the management API (staff) and
the Django admin, with the config-as-code names (``breaker: {failures, cooldown_s}``)."""

import pytest
from django.contrib.auth import get_user_model

from apps.catalog.models import Backend
from tests.api.api_support import user_client

pytestmark = pytest.mark.django_db


def patch(org, backend: Backend, body: dict):
    return user_client(org.staff).patch(f"/api/v1/staff/backends/{backend.id}", body, format="json")


def test_a_backend_shows_its_breaker(org):
    backend = Backend.objects.get(name="fake")
    shown = user_client(org.staff).get(f"/api/v1/staff/backends/{backend.id}").json()
    assert shown["breaker"] == {"failures": 3, "cooldown_s": 30.0}


def test_a_backend_shows_its_first_byte_deadline(org):
    backend = Backend.objects.get(name="fake")
    shown = user_client(org.staff).get(f"/api/v1/staff/backends/{backend.id}").json()
    assert shown["first_byte_timeout_s"] is None


def test_staff_set_a_backends_breaker(org):
    backend = Backend.objects.get(name="fake")
    patch(org, backend, {"breaker": {"failures": 5, "cooldown_s": 12}})
    backend.refresh_from_db()
    assert (backend.breaker_failures, backend.breaker_cooldown_s) == (5, 12.0)


def test_staff_set_one_field_of_a_backends_breaker(org):
    backend = Backend.objects.get(name="fake")
    patch(org, backend, {"breaker": {"cooldown_s": 12}})
    backend.refresh_from_db()
    assert (backend.breaker_failures, backend.breaker_cooldown_s) == (3, 12.0)


def test_staff_set_a_backends_first_byte_deadline(org):
    backend = Backend.objects.get(name="fake")
    response = patch(org, backend, {"first_byte_timeout_s": 2.5})
    assert response.json()["first_byte_timeout_s"] == 2.5


def test_staff_clear_a_backends_first_byte_deadline(org):
    backend = Backend.objects.get(name="fake")
    patch(org, backend, {"first_byte_timeout_s": 2.5})
    response = patch(org, backend, {"first_byte_timeout_s": None})
    assert response.json()["first_byte_timeout_s"] is None


def test_an_invalid_breaker_failures_is_a_400(org):
    response = patch(org, Backend.objects.get(name="fake"), {"breaker": {"failures": 0}})
    assert response.status_code == 400


def test_an_invalid_breaker_failures_names_the_field(org):
    response = patch(org, Backend.objects.get(name="fake"), {"breaker": {"failures": 0}})
    assert set(response.json()) == {"breaker"}
    assert set(response.json()["breaker"]) == {"failures"}


def test_an_unknown_breaker_field_is_refused(org):
    response = patch(org, Backend.objects.get(name="fake"), {"breaker": {"failure": 3}})
    assert response.status_code == 400


def test_a_non_positive_first_byte_deadline_names_the_field(org):
    response = patch(org, Backend.objects.get(name="fake"), {"first_byte_timeout_s": 0})
    assert set(response.json()) == {"first_byte_timeout_s"}


@pytest.fixture
def superuser_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567")
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "field", ["first_byte_timeout_s", "breaker_failures", "breaker_cooldown_s"]
)
def test_the_backend_admin_form_offers_the_field(org, superuser_client, field):
    backend = Backend.objects.get(name="fake")
    page = superuser_client.get(f"/admin/catalog/backend/{backend.id}/change/")
    assert f'name="{field}"'.encode() in page.content
