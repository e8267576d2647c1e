"""A model's balancing through the management API (staff), the Django admin and the
staff models page."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from apps.catalog.models import Model
from tests.api.api_support import user_client

pytestmark = pytest.mark.django_db


def test_staff_create_a_model_balanced_by_affinity(org):
    created = user_client(org.staff).post(
        "/api/v1/staff/models",
        {"name": "sticky", "strategy": "affinity", "affinity_key": "header:X-Session-Id"},
        format="json",
    )
    assert (created.json()["strategy"], created.json()["affinity_key"]) == (
        "affinity",
        "header:x-session-id",
    )


def test_a_model_created_without_a_strategy_is_weighted(org):
    created = user_client(org.staff).post("/api/v1/staff/models", {"name": "plain"}, format="json")
    assert created.json()["strategy"] == "weighted"


def test_staff_change_a_models_strategy(org):
    model = Model.objects.create(name="plain")
    user_client(org.staff).patch(
        f"/api/v1/staff/models/{model.id}", {"strategy": "least-busy"}, format="json"
    )
    assert Model.objects.get(id=model.id).strategy == "least-busy"


def test_an_unknown_strategy_is_refused_naming_the_field(org):
    refused = user_client(org.staff).post(
        "/api/v1/staff/models", {"name": "plain", "strategy": "random"}, format="json"
    )
    assert "strategy" in refused.json()


def test_an_unknown_affinity_key_is_refused_naming_the_field(org):
    refused = user_client(org.staff).post(
        "/api/v1/staff/models", {"name": "plain", "affinity_key": "cookie:x"}, format="json"
    )
    assert "affinity_key" in refused.json()


def test_an_unknown_affinity_key_is_refused_with_a_400(org):
    refused = user_client(org.staff).post(
        "/api/v1/staff/models", {"name": "plain", "affinity_key": 7}, format="json"
    )
    assert refused.status_code == 400


@pytest.fixture
def superuser_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567")
    client.force_login(user)
    return client


ADMIN_FORM = {
    "name": "sticky",
    "aliases": "[]",
    "display_name": "",
    "enabled": "on",
    "prompt_allowance_per_request": "512",
    "prompt_allowance_per_message": "32",
    "image_token_bound": "4096",
    "max_output_tokens": "4096",
    "strategy": "affinity",
    "affinity_key": "user",
    "deployments-TOTAL_FORMS": "0",
    "deployments-INITIAL_FORMS": "0",
    "prices-TOTAL_FORMS": "0",
    "prices-INITIAL_FORMS": "0",
}


def test_the_model_admin_saves_a_strategy(superuser_client):
    model = Model.objects.create(name="sticky")
    superuser_client.post(f"/admin/catalog/model/{model.id}/change/", ADMIN_FORM)
    model.refresh_from_db()
    assert (model.strategy, model.affinity_key) == ("affinity", "user")


def test_the_model_admin_shows_a_wrong_affinity_key_on_its_field(superuser_client):
    model = Model.objects.create(name="sticky")
    page = superuser_client.post(
        f"/admin/catalog/model/{model.id}/change/", {**ADMIN_FORM, "affinity_key": "cookie"}
    )
    assert "affinity_key" in page.context["adminform"].form.errors


def test_the_staff_models_page_shows_the_strategy(org, client):
    Model.objects.create(name="sticky", strategy="affinity", affinity_key="prefix")
    client.force_login(org.staff)
    page = client.get(reverse("dashboard:staff-models")).content.decode()
    assert 'affinity<div class="muted">by prefix</div>' in page
