"""A model's fallback lists, as every way in writes them (service, Django admin, staff
page): other existing models, in order, none twice, not itself, bounded."""

import pytest
from django.contrib.auth import get_user_model

from apps.catalog.models import Model
from apps.catalog.services import (
    MAX_FALLBACKS,
    FallbacksInvalid,
    model_create,
    model_fallbacks_clean,
    model_update,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def models():
    for name in ("main", "backup", "long"):
        Model.objects.create(name=name)


def clean(value, field: str = "fallbacks") -> list[str]:
    return model_fallbacks_clean(model_name="main", field=field, value=value)


def refusal(value, field: str = "fallbacks") -> FallbacksInvalid:
    with pytest.raises(FallbacksInvalid) as exc:
        clean(value, field)
    return exc.value


def test_a_list_of_other_models_is_kept_in_order(models):
    assert clean(["long", "backup"]) == ["long", "backup"]


def test_no_list_is_an_empty_one(models):
    assert clean(None) == []


def test_an_unknown_model_is_refused_by_name(models):
    assert refusal(["backup", "nowhere"]).message == "unknown model 'nowhere'"


def test_the_model_itself_is_refused(models):
    assert refusal(["main"]).message == "'main' is the model itself"


def test_a_model_named_twice_is_refused(models):
    assert refusal(["backup", "backup"]).message == "'backup' is named twice"


def test_a_long_list_is_refused(models):
    assert refusal([f"m{i}" for i in range(MAX_FALLBACKS + 1)]).message == (
        f"at most {MAX_FALLBACKS} models"
    )


@pytest.mark.parametrize("value", ["backup", [""], [3], {"a": 1}], ids=str)
def test_anything_but_a_list_of_names_is_refused(models, value):
    assert refusal(value).message == "must be a list of model names"


def test_the_refusal_names_its_field(models):
    assert refusal(["nowhere"], "context_window_fallbacks").field == "context_window_fallbacks"


def test_model_create_takes_fallbacks(models):
    model = model_create(name="new", fallbacks=["backup"], context_window_fallbacks=["long"])
    assert (model.fallbacks, model.context_window_fallbacks) == (["backup"], ["long"])


def test_model_update_refuses_a_fallback_on_itself(models):
    with pytest.raises(FallbacksInvalid):
        model_update(model=Model.objects.get(name="main"), fallbacks=["main"])


def test_a_renamed_model_may_not_fall_back_on_its_new_name(models):
    with pytest.raises(FallbacksInvalid):
        model_update(model=Model.objects.get(name="main"), name="backup2", fallbacks=["backup2"])


# Django admin ------------------------------------------------------------------------


@pytest.fixture
def superuser_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567")
    client.force_login(user)
    return client


def admin_form(**fields) -> dict:
    return {
        "name": "main",
        "aliases": "[]",
        "display_name": "",
        "enabled": "on",
        "prompt_allowance_per_request": "512",
        "prompt_allowance_per_message": "32",
        "image_token_bound": "4096",
        "max_output_tokens": "4096",
        "fallbacks": "[]",
        "context_window_fallbacks": "[]",
        "strategy": "weighted",
        "affinity_key": "prompt_cache_key",
        "deployments-TOTAL_FORMS": "0",
        "deployments-INITIAL_FORMS": "0",
        "prices-TOTAL_FORMS": "0",
        "prices-INITIAL_FORMS": "0",
        **fields,
    }


def test_the_admin_saves_fallbacks(models, superuser_client):
    model = Model.objects.get(name="main")
    superuser_client.post(
        f"/admin/catalog/model/{model.id}/change/", admin_form(fallbacks='["backup", "long"]')
    )
    model.refresh_from_db()
    assert model.fallbacks == ["backup", "long"]


def test_the_admin_refuses_an_unknown_fallback_naming_the_field(models, superuser_client):
    model = Model.objects.get(name="main")
    page = superuser_client.post(
        f"/admin/catalog/model/{model.id}/change/",
        admin_form(context_window_fallbacks='["nowhere"]'),
    )
    assert page.context["adminform"].form.errors["context_window_fallbacks"] == [
        "unknown model 'nowhere'"
    ]


def test_the_staff_models_page_shows_the_fallbacks(models, client):
    staff = get_user_model().objects.create_user("ops", password="pw-1234567", is_staff=True)
    client.force_login(staff)
    Model.objects.filter(name="main").update(fallbacks=["backup", "long"])
    page = client.get("/dashboard/staff/models/")
    assert "backup, long" in page.content.decode()
