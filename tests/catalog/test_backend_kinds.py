"""A backend's kind is one the gateway has an adapter for, on every way in: the model's
validation, the Django admin, config-as-code, the management API."""

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from apps.catalog.models import Backend
from apps.gateway.backends import ADAPTERS
from apps.provisioning.services import ConfigError, config_apply

pytestmark = pytest.mark.django_db


def test_a_backend_of_an_unknown_kind_fails_validation():
    backend = Backend(name="b", kind="gemini", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValidationError) as raised:
        backend.full_clean()
    assert "kind" in raised.value.message_dict


def test_a_backend_of_a_kind_registered_later_passes_validation(extra_kind):
    Backend(name="b", kind=extra_kind, base_url="http://127.0.0.1:9/v1").full_clean()


def test_the_kinds_offered_are_the_registered_adapters():
    assert dict(Backend._meta.get_field("kind").choices) == {
        kind: adapter.label for kind, adapter in ADAPTERS.items()
    }


@pytest.fixture
def superuser_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567")
    client.force_login(user)
    return client


def _admin_add(client, kind: str):
    return client.post(
        "/admin/catalog/backend/add/",
        {
            "name": "added",
            "kind": kind,
            "base_url": "http://127.0.0.1:9/v1",
            "timeout_s": "60",
            "connect_timeout_s": "5",
            "breaker_failures": "3",  # as the form's initial values post them
            "breaker_cooldown_s": "30",
            "extra_headers": "{}",
            "enabled": "on",
        },
    )


def test_the_admin_refuses_a_backend_of_an_unknown_kind(superuser_client):
    _admin_add(superuser_client, "gemini")
    assert not Backend.objects.filter(name="added").exists()


def test_the_admin_adds_a_backend_of_a_registered_kind(superuser_client):
    _admin_add(superuser_client, "anthropic")
    assert Backend.objects.get(name="added").kind == "anthropic"


def _config(kind: str) -> dict:
    return {"backends": [{"name": "b", "kind": kind, "base_url": "http://127.0.0.1:9/v1"}]}


def test_config_as_code_refuses_an_unknown_kind_naming_the_field():
    with pytest.raises(ConfigError) as raised:
        config_apply(document=_config("gemini"))
    assert raised.value.path == "backends[0].kind"


def test_config_as_code_says_which_kinds_there_are():
    with pytest.raises(ConfigError, match="'anthropic'"):
        config_apply(document=_config("gemini"))


def test_config_as_code_accepts_a_kind_registered_later(extra_kind):
    config_apply(document=_config(extra_kind))
    assert Backend.objects.get(name="b").kind == extra_kind
