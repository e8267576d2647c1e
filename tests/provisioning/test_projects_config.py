"""A tenant's projects as config-as-code: created and updated to what the file says, keys
listed under a project go into it, keys listed under the tenant into its default project;
a re-apply changes nothing; invalid values are named by their path."""

from decimal import Decimal

import pytest

from apps.keys.models import ApiKey
from apps.projects.models import Project
from apps.provisioning.services import ConfigError, config_apply

pytestmark = pytest.mark.django_db

MODELS = [
    {"name": "gemma-270m", "deployments": [{"backend": "fake", "upstream_model": "g"}]},
    {"name": "other-model", "deployments": [{"backend": "fake", "upstream_model": "o"}]},
]
BACKENDS = [{"name": "fake", "base_url": "http://127.0.0.1:9/v1"}]

WEB = {
    "name": "web",
    "models": ["gemma-270m"],
    "rpm": 50,
    "tpm": 20000,
    "max_concurrent": 4,
    "budget": {"amount": "25.00", "period": "monthly"},
    "model_limits": {"gemma-270m": {"rpm": 10, "budget": {"amount": "1.00", "period": "daily"}}},
    "end_user_limits": {"rpm": 5, "budget": {"amount": "0.50", "period": "daily"}},
    "keys": [{"name": "web-key", "models": ["*"]}],
}


def document(**tenant) -> dict:
    return {
        "backends": BACKENDS,
        "models": MODELS,
        "tenants": [{"name": "acme", "keys": [{"name": "main", "models": ["*"]}], **tenant}],
    }


def apply(**tenant):
    return config_apply(document=document(**tenant))


def web() -> Project:
    return Project.objects.get(tenant__name="acme", name="web")


def test_a_project_is_created_with_its_allowlist_and_limits():
    apply(projects=[WEB])
    project = web()
    assert project.allowed_models == ["gemma-270m"]
    assert (project.rpm, project.tpm, project.max_concurrent) == (50, 20000, 4)
    assert project.budget_amount == Decimal("25.00")


def test_a_project_keeps_its_model_and_end_user_limits():
    apply(projects=[WEB])
    assert web().model_limits == {
        "gemma-270m": {"rpm": 10, "budget": {"amount": "1.00", "period": "daily"}}
    }
    assert web().end_user_limits == {"rpm": 5, "budget": {"amount": "0.50", "period": "daily"}}


def test_keys_listed_under_a_project_go_into_it():
    apply(projects=[WEB])
    assert ApiKey.objects.get(name="web-key").project == web()


def test_keys_listed_under_the_tenant_go_to_its_default_project():
    apply(projects=[WEB])
    assert ApiKey.objects.get(name="main").project.is_default


def test_a_new_keys_secret_names_its_project():
    result = apply(projects=[WEB])
    created = {k["name"]: k["project"] for k in result.keys_created}
    assert created == {"main": "default", "web-key": "web"}


def test_a_reapply_changes_nothing():
    apply(projects=[WEB])
    again = apply(projects=[WEB])
    assert again.changes == []


def test_a_changed_limit_updates_the_project():
    apply(projects=[WEB])
    result = apply(projects=[{**WEB, "rpm": 60}])
    assert web().rpm == 60
    assert result.changes == ["project acme/web updated"]


def test_a_key_listed_under_another_project_moves_there():
    apply(projects=[WEB])
    apply(keys=[{"name": "web-key", "models": ["*"]}], projects=[{**WEB, "keys": []}])
    assert ApiKey.objects.get(name="web-key", revoked_at__isnull=True).project.is_default


def test_a_project_named_like_the_default_configures_it():
    apply(projects=[{"name": "default", "rpm": 7}])
    assert Project.objects.get(tenant__name="acme", is_default=True).rpm == 7


def test_models_left_out_allow_every_model():
    apply(projects=[{"name": "open"}])
    assert Project.objects.get(name="open").allowed_models == ["*"]


@pytest.mark.parametrize(
    ("project", "path"),
    [
        ({"name": "web", "rpm": -1}, "tenants[0].projects[1].rpm"),
        ({"name": "web", "rpm": "fast"}, "tenants[0].projects[1].rpm"),
        ({"name": "web", "rpm": 2**40}, "tenants[0].projects[1].rpm"),
        ({"name": "web", "models": ["nope"]}, "tenants[0].projects[1].models[0]"),
        ({"name": "web", "budget": {"amount": 5.5}}, "tenants[0].projects[1].budget.amount"),
        (
            {"name": "web", "model_limits": {"gemma-270m": {"rpm": "x"}}},
            "tenants[0].projects[1].model_limits.gemma-270m.rpm",
        ),
        (
            {"name": "web", "model_limits": {"nope": {"rpm": 1}}},
            "tenants[0].projects[1].model_limits.nope",
        ),
        (
            {"name": "web", "end_user_limits": {"max_concurrent": 1}},
            "tenants[0].projects[1].end_user_limits.max_concurrent",
        ),
        (
            {"name": "web", "end_user_limits": {"budget": {"amount": "1", "period": "lifetime"}}},
            "tenants[0].projects[1].end_user_limits.budget.period",
        ),
        ({"name": "web", "colour": "red"}, "tenants[0].projects[1].colour"),
        ({"name": "bad name"}, "tenants[0].projects[1].name"),
        ({"name": "first"}, "tenants[0].projects[1].name"),
        ({"name": "web", "keys": [{"name": "main"}]}, "tenants[0].projects[1].keys[0].name"),
    ],
)
def test_an_invalid_value_names_its_field(project, path):
    with pytest.raises(ConfigError) as caught:
        apply(projects=[{"name": "first"}, project])
    assert caught.value.path == path


def test_an_invalid_document_changes_nothing():
    with pytest.raises(ConfigError):
        apply(projects=[WEB, {"name": "broken", "rpm": -1}])
    assert not Project.objects.filter(name="web").exists()


# A key's per-model limits and default tags --------------------------------------------------

KEY = {
    "name": "tagged",
    "models": ["*"],
    "model_limits": {"gemma-270m": {"rpm": 3, "budget": {"amount": "0.50", "period": "daily"}}},
    "default_tags": {"team": "web", "env": "prod"},
}


def tagged() -> ApiKey:
    return ApiKey.objects.get(name="tagged", revoked_at__isnull=True)


def test_a_key_keeps_its_model_limits():
    apply(projects=[{**WEB, "keys": [KEY]}])
    assert tagged().model_limits == {
        "gemma-270m": {"rpm": 3, "budget": {"amount": "0.50", "period": "daily"}}
    }


def test_a_key_keeps_its_default_tags():
    apply(keys=[KEY])
    assert tagged().default_tags == {"team": "web", "env": "prod"}


def test_a_reapply_of_a_keys_model_limits_and_tags_changes_nothing():
    apply(projects=[{**WEB, "keys": [KEY]}])
    assert apply(projects=[{**WEB, "keys": [KEY]}]).changes == []


def test_a_changed_default_tag_updates_the_key():
    apply(keys=[KEY])
    result = apply(keys=[{**KEY, "default_tags": {"team": "ml"}}])
    assert (tagged().default_tags, result.changes) == ({"team": "ml"}, ["key acme/tagged updated"])


def test_model_limits_left_out_clear_the_keys():
    apply(keys=[KEY])
    apply(keys=[{k: v for k, v in KEY.items() if k != "model_limits"}])
    assert tagged().model_limits == {}


def test_what_the_api_sets_on_a_key_and_project_config_as_code_says_the_same():
    """A key and a project changed through the management API, then a document saying the
    same values: applying it changes nothing (config as code can say all of it)."""
    from rest_framework.test import APIClient

    from apps.tenants.models import Tenant
    from apps.tenants.services import admin_token_issue

    apply(projects=[{"name": "web"}])
    tenant = Tenant.objects.get(name="acme")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {admin_token_issue(tenant=tenant, name='t')[1]}")
    project_body = {
        "display_name": "Web",
        "allowed_models": ["gemma-270m"],
        "rpm": 50,
        "tpm": 20000,
        "max_concurrent": 4,
        "budget_amount": "25.00",
        "budget_period": "monthly",
        "model_limits": WEB["model_limits"],
        "end_user_limits": WEB["end_user_limits"],
    }
    assert (
        client.patch(f"/api/v1/projects/{web().id}", project_body, format="json").status_code == 200
    )
    key_body = {
        "name": "tagged",
        "project": web().id,
        "allowed_models": ["gemma-270m"],
        "rpm": 5,
        "budget_amount": "2.00",
        "budget_period": "daily",
        "model_limits": KEY["model_limits"],
        "default_tags": KEY["default_tags"],
    }
    assert client.post("/api/v1/keys", key_body, format="json").status_code == 201
    document_key = {
        "name": "tagged",
        "models": ["gemma-270m"],
        "rpm": 5,
        "budget": {"amount": "2.00", "period": "daily"},
        "model_limits": KEY["model_limits"],
        "default_tags": KEY["default_tags"],
    }
    same = {**WEB, "display_name": "Web", "keys": [document_key]}
    assert apply(projects=[same]).changes == []


@pytest.mark.parametrize(
    ("key", "path"),
    [
        (
            {"name": "k", "model_limits": {"gemma-270m": {"rpm": -1}}},
            "tenants[0].keys[1].model_limits.gemma-270m.rpm",
        ),
        (
            {"name": "k", "model_limits": {"nope": {"rpm": 1}}},
            "tenants[0].keys[1].model_limits.nope",
        ),
        (
            {"name": "k", "default_tags": {"team": "=cmd|' /C calc'!A0"}},
            "tenants[0].keys[1].default_tags.team",
        ),
        (
            {"name": "k", "default_tags": {f"t{n}": "v" for n in range(11)}},
            "tenants[0].keys[1].default_tags",
        ),
        ({"name": "k", "default_tags": ["team:web"]}, "tenants[0].keys[1].default_tags"),
    ],
)
def test_an_invalid_key_block_names_its_field(key, path):
    with pytest.raises(ConfigError) as caught:
        apply(keys=[{"name": "main", "models": ["*"]}, key])
    assert caught.value.path == path


# Export: apply → export → apply is a no-op -----------------------------------------------


def exported_document() -> dict:
    from apps.provisioning.export import config_export

    return {"backends": BACKENDS, "models": MODELS, **config_export(tenant_names=["acme"])}


FULL_KEY = {
    **KEY,
    "rpm": 5,
    "tpm": 900,
    "max_concurrent": 2,
    "budget": {"amount": "2.50", "period": "daily"},
    "expires_at": "2030-01-02T03:04:05+00:00",
}


def test_apply_export_apply_changes_nothing():
    apply(
        rpm=100,
        budget={"amount": "40.00", "period": "monthly"},
        byok=True,
        projects=[{**WEB, "keys": [FULL_KEY]}, {"name": "default", "tpm": 7000}],
    )
    assert config_apply(document=exported_document()).changes == []


def test_the_export_holds_a_keys_model_limits_and_default_tags():
    apply(projects=[{**WEB, "keys": [KEY]}])
    exported = exported_document()["tenants"][0]
    (web_entry,) = [p for p in exported["projects"] if p["name"] == "web"]
    assert (web_entry["keys"][0]["model_limits"], web_entry["keys"][0]["default_tags"]) == (
        KEY["model_limits"],
        KEY["default_tags"],
    )


def test_what_the_api_set_exports_and_applies_as_no_change():
    from rest_framework.test import APIClient

    from apps.tenants.models import Tenant
    from apps.tenants.services import admin_token_issue

    apply(projects=[{"name": "web"}])
    tenant = Tenant.objects.get(name="acme")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {admin_token_issue(tenant=tenant, name='t')[1]}")
    client.patch(
        f"/api/v1/projects/{web().id}",
        {"rpm": 9, "model_limits": WEB["model_limits"], "end_user_limits": {"rpm": 2}},
        format="json",
    )
    client.post(
        "/api/v1/keys",
        {
            "name": "api-made",
            "project": web().id,
            "allowed_models": ["gemma-270m"],
            "budget_amount": "0.125",
            "budget_period": "daily",
            "model_limits": {"gemma-270m": {"tpm": 100}},
            "default_tags": {"team": "api"},
        },
        format="json",
    )
    assert config_apply(document=exported_document()).changes == []


def test_the_export_command_prints_yaml_that_applies_as_no_change():
    import io

    import yaml
    from django.core.management import call_command

    apply(projects=[{**WEB, "keys": [FULL_KEY]}])
    out = io.StringIO()
    call_command("export", "--tenant", "acme", stdout=out)
    document = {"backends": BACKENDS, "models": MODELS, **yaml.safe_load(out.getvalue())}
    assert config_apply(document=document).changes == []
