"""Content policies in the database: the service, config-as-code and the gateway's key
cache (the effective policy it carries)."""

import pytest

from apps.catalog.models import Backend
from apps.gateway.caches import _load_key
from apps.keys.models import ApiKey
from apps.moderation.policy import PolicyError
from apps.moderation.services import content_policy_effective, content_policy_set
from apps.provisioning.services import ConfigError, config_apply
from apps.tenants.models import Tenant

pytestmark = pytest.mark.django_db


def document(tenant_policy=None, key_policy=None) -> dict:
    tenant: dict = {"name": "acme", "keys": [{"name": "ci", "models": ["*"]}]}
    if tenant_policy is not None:
        tenant["content_policy"] = tenant_policy
    if key_policy is not None:
        tenant["keys"][0]["content_policy"] = key_policy
    return {
        "backends": [{"name": "mod", "base_url": "http://127.0.0.1:9/v1", "api_key": "mod-secret"}],
        "tenants": [tenant],
    }


def test_config_as_code_sets_tenant_and_key_policies_idempotently():
    doc = document(
        {"violence": {"prompt": "block", "threshold": "high"}, "moderation": {"backend": "mod"}},
        {"violence": {"prompt": "annotate"}, "hate": {"completion": "block"}},
    )
    first = config_apply(document=doc)
    tenant = Tenant.objects.get(name="acme")
    assert tenant.content_policy["violence"] == {
        "prompt": "block",
        "completion": "off",
        "threshold": "high",
    }
    assert tenant.content_policy["moderation"] == {
        "backend": "mod",
        "model": "omni-moderation-latest",
        "timeout_s": 2.0,
    }
    key = ApiKey.objects.get(name="ci")
    assert key.content_policy["hate"]["completion"] == "block"
    assert first.keys_created
    again = config_apply(document=doc)
    assert again.changes == [] and again.keys_created == []
    # removing it from the document removes it
    config_apply(document=document())
    assert Tenant.objects.get(name="acme").content_policy == {}


@pytest.mark.parametrize(
    ("tenant_policy", "key_policy", "path"),
    [
        ({"hate": {"prompt": "deny"}}, None, "tenants[0].content_policy.hate.prompt"),
        (None, {"violence": {"threshold": "x"}}, "tenants[0].keys[0].content_policy.violence.threshold"),
        ({"nudity": {}}, None, "tenants[0].content_policy.nudity"),
        ({"moderation": {"backend": "nope"}}, None, "tenants[0].content_policy.moderation.backend"),
        ("block", None, "tenants[0].content_policy"),
    ],
)  # fmt: skip
def test_config_errors_name_the_field_and_change_nothing(tenant_policy, key_policy, path):
    with pytest.raises(ConfigError) as info:
        config_apply(document=document(tenant_policy, key_policy))
    assert info.value.path == path
    assert not Tenant.objects.filter(name="acme").exists()


def test_service_sets_validates_and_invalidates(monkeypatch):
    config_apply(document=document())
    published = []
    monkeypatch.setattr("apps.moderation.services.publish", lambda c, m: published.append(m))
    tenant = Tenant.objects.get(name="acme")
    key = ApiKey.objects.get(name="ci")
    with pytest.raises(PolicyError) as info:
        content_policy_set(tenant=tenant, policy={"sexual": {"completion": "maybe"}})
    assert info.value.path == "sexual.completion"
    with pytest.raises(ValueError):
        content_policy_set(tenant=tenant, api_key=key, policy={})
    stored = content_policy_set(tenant=tenant, policy={"sexual": {"completion": "block"}})
    assert Tenant.objects.get(pk=tenant.pk).content_policy == stored
    content_policy_set(api_key=key, policy={"sexual": {"completion": "annotate"}})
    assert ApiKey.objects.get(pk=key.pk).content_policy["sexual"]["completion"] == "annotate"


@pytest.mark.django_db(transaction=True)
def test_writes_publish_invalidations_after_commit(monkeypatch):
    config_apply(document=document())
    published = []
    monkeypatch.setattr("apps.moderation.services.publish", lambda c, m: published.append(m))
    key = ApiKey.objects.get(name="ci")
    content_policy_set(tenant=key.tenant, policy={"hate": {"prompt": "block"}})
    content_policy_set(api_key=key, policy={"hate": {"prompt": "off"}})
    assert published == ["*", key.key_hash]


def test_key_cache_carries_the_effective_policy():
    config_apply(
        document=document(
            {"violence": {"prompt": "block"}, "hate": {"prompt": "block"}},
            {"violence": {"prompt": "annotate", "completion": "block"}},
        )
    )
    key = ApiKey.objects.get(name="ci")
    info = _load_key(key.key_hash)
    policy = info.content_policy
    assert policy.rules["hate"].prompt == "block"
    assert policy.rules["violence"].prompt == "annotate"
    assert policy.rules["violence"].completion == "block"
    assert policy.prompt_active and policy.completion_active and policy.remote is None


def test_no_policy_means_none_in_the_cache():
    config_apply(document=document())
    assert _load_key(ApiKey.objects.get(name="ci").key_hash).content_policy is None


def test_remote_detector_resolved_from_its_backend():
    config_apply(
        document=document(
            {"violence": {"prompt": "block"}, "moderation": {"backend": "mod", "timeout_s": 1}}
        )
    )
    policy = content_policy_effective(api_key=ApiKey.objects.get(name="ci"))
    remote = policy.remote
    assert remote.url == "http://127.0.0.1:9/v1/moderations"
    assert ("Authorization", "Bearer mod-secret") in remote.headers
    assert remote.timeout_s == 1.0 and remote.model == "omni-moderation-latest"
    Backend.objects.filter(name="mod").update(enabled=False)
    # a disabled backend: the built-in detector serves
    assert content_policy_effective(api_key=ApiKey.objects.get(name="ci")).remote is None
