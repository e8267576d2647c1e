"""Django admin: staff edit a model's budget bounds."""

import pytest
from django.contrib.auth import get_user_model

from apps.catalog.models import Model

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567")
    client.force_login(user)
    return client


def test_the_model_admin_page_shows_the_budget_bounds(superuser_client):
    model = Model.objects.create(name="bounded")
    page = superuser_client.get(f"/admin/catalog/model/{model.id}/change/")
    assert b"prompt_allowance_per_request" in page.content


def test_the_model_admin_saves_a_maximum_output(superuser_client):
    model = Model.objects.create(name="bounded")
    superuser_client.post(
        f"/admin/catalog/model/{model.id}/change/",
        {
            "name": "bounded",
            "aliases": "[]",
            "display_name": "",
            "enabled": "on",
            "prompt_allowance_per_request": "512",
            "prompt_allowance_per_message": "32",
            "image_token_bound": "4096",
            "max_output_tokens": "8192",
            "deployments-TOTAL_FORMS": "0",
            "deployments-INITIAL_FORMS": "0",
            "prices-TOTAL_FORMS": "0",
            "prices-INITIAL_FORMS": "0",
        },
    )
    model.refresh_from_db()
    assert model.max_output_tokens == 8192
