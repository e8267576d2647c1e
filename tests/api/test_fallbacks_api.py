"""Staff set a model's fallbacks through the management API; a wrong list is a 400
naming the field."""

import pytest

from apps.catalog.models import Model
from tests.api.api_support import user_client

pytestmark = pytest.mark.django_db


def model_id(name: str) -> int:
    return Model.objects.get(name=name).id


def patch(org, name: str, body: dict):
    return user_client(org.staff).patch(
        f"/api/v1/staff/models/{model_id(name)}", body, format="json"
    )


def test_staff_set_a_models_fallbacks(org):
    patch(org, "test-model", {"fallbacks": ["other-model"]})
    assert Model.objects.get(name="test-model").fallbacks == ["other-model"]


def test_the_answer_shows_the_fallbacks(org):
    response = patch(org, "test-model", {"context_window_fallbacks": ["other-model"]})
    assert response.json()["context_window_fallbacks"] == ["other-model"]


def test_a_model_is_created_with_fallbacks(org):
    response = user_client(org.staff).post(
        "/api/v1/staff/models", {"name": "third", "fallbacks": ["test-model"]}, format="json"
    )
    assert response.json()["fallbacks"] == ["test-model"]


def test_an_unknown_fallback_is_a_400_naming_the_field(org):
    response = patch(org, "test-model", {"fallbacks": ["nowhere"]})
    assert (response.status_code, response.json()) == (
        400,
        {"fallbacks": ["unknown model 'nowhere'"]},
    )


def test_a_fallback_on_itself_is_a_400_naming_the_field(org):
    response = patch(org, "test-model", {"context_window_fallbacks": ["test-model"]})
    assert set(response.json()) == {"context_window_fallbacks"}


def test_a_fallback_list_that_is_not_a_list_is_a_400_naming_the_field(org):
    response = patch(org, "test-model", {"fallbacks": "other-model"})
    assert set(response.json()) == {"fallbacks"}


def test_a_tenant_admin_cannot_set_fallbacks(org):
    response = user_client(org.admin).patch(
        f"/api/v1/staff/models/{model_id('test-model')}", {"fallbacks": []}, format="json"
    )
    assert response.status_code in (403, 404)
