"""The BYOK opt-ins as config-as-code sets them (a tenant's and a backend's ``byok``) and
the gateway's caches carry them (keys: the tenant's; the catalog: the backend's)."""

import pytest

from apps.catalog.models import Backend
from apps.gateway.caches import _load_catalog, _load_key
from apps.keys.hashing import secret_hash
from apps.provisioning.services import ConfigError, config_apply
from apps.tenants.models import Tenant

pytestmark = pytest.mark.django_db


def document(backend: dict | None = None, tenant: dict | None = None) -> dict:
    return {
        "backends": [{"name": "vllm", "base_url": "http://127.0.0.1:9/v1", **(backend or {})}],
        "models": [{"name": "m", "deployments": [{"backend": "vllm", "upstream_model": "u"}]}],
        "tenants": [{"name": "acme", "keys": [{"name": "k", "models": ["m"]}], **(tenant or {})}],
    }


def key_secret(result) -> str:
    return result.keys_created[0]["secret"]


def test_a_tenant_does_not_allow_byok_unless_configured_to():
    config_apply(document=document())
    assert Tenant.objects.get(name="acme").byok_allowed is False


def test_a_backend_does_not_accept_byok_unless_configured_to():
    config_apply(document=document())
    assert Backend.objects.get(name="vllm").byok_allowed is False


def test_config_sets_the_tenants_opt_in():
    config_apply(document=document(tenant={"byok": True}))
    assert Tenant.objects.get(name="acme").byok_allowed is True


def test_config_sets_the_backends_opt_in():
    config_apply(document=document(backend={"byok": True}))
    assert Backend.objects.get(name="vllm").byok_allowed is True


def test_removing_the_tenants_opt_in_from_the_file_turns_it_off():
    config_apply(document=document(tenant={"byok": True}))
    config_apply(document=document())
    assert Tenant.objects.get(name="acme").byok_allowed is False


def test_config_refuses_a_tenant_flag_that_is_not_a_boolean():
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.byok"):
        config_apply(document=document(tenant={"byok": "yes"}))


def test_config_refuses_a_backend_flag_that_is_not_a_boolean():
    with pytest.raises(ConfigError, match=r"backends\[0\]\.byok"):
        config_apply(document=document(backend={"byok": 1}))


def test_the_key_cache_carries_the_tenants_opt_in():
    result = config_apply(document=document(tenant={"byok": True}))
    assert _load_key(secret_hash(key_secret(result))).byok_allowed is True


def test_the_key_cache_carries_a_tenant_without_the_opt_in():
    result = config_apply(document=document())
    assert _load_key(secret_hash(key_secret(result))).byok_allowed is False


def test_the_catalog_carries_the_backends_opt_in_to_its_deployments():
    config_apply(document=document(backend={"byok": True}))
    (deployment,) = _load_catalog().by_name["m"].deployments
    assert deployment.byok_allowed is True


def test_a_deployment_with_the_callers_key_carries_it_instead_of_the_backends():
    config_apply(document=document(backend={"byok": True, "api_key": "backend-secret"}))
    (deployment,) = _load_catalog().by_name["m"].deployments
    assert deployment.with_caller_key("caller-secret").headers == {
        "Authorization": "Bearer caller-secret"
    }


def test_the_callers_key_keeps_the_backends_other_headers():
    headers = {"X-Org": "acme", "authorization": "Bearer other"}
    config_apply(document=document(backend={"byok": True, "extra_headers": headers}))
    (deployment,) = _load_catalog().by_name["m"].deployments
    assert deployment.with_caller_key("caller-secret").headers == {
        "X-Org": "acme",
        "Authorization": "Bearer caller-secret",
    }
