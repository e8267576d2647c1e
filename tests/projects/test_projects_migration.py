"""Tenants older than projects get a default project holding every one of their keys."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("keys", "0004_apikey_previous_secret")]


@pytest.fixture
def migrated(transactional_db):
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    # The state the database is in once keys is back at BEFORE (every app that depends on
    # a later keys migration is unapplied with it).
    old = executor.migrate(BEFORE).apps
    tenants = old.get_model("tenants", "Tenant").objects
    keys = old.get_model("keys", "ApiKey").objects
    with_keys = tenants.create(name="oldco")
    for n in range(2):
        keys.create(tenant=with_keys, name=f"k{n}", prefix="tg-old", key_hash=f"{n}" * 64)
    tenants.create(name="keyless")
    MigrationExecutor(connection).migrate(latest)
    from apps.keys.models import ApiKey
    from apps.projects.models import Project

    return ApiKey, Project


def test_a_tenant_with_keys_gets_one_default_project(migrated):
    _, Project = migrated
    assert Project.objects.filter(tenant__name="oldco", is_default=True).count() == 1


def test_a_tenant_without_keys_gets_a_default_project(migrated):
    _, Project = migrated
    assert Project.objects.filter(tenant__name="keyless", is_default=True).count() == 1


def test_every_existing_key_moves_into_its_tenants_default_project(migrated):
    ApiKey, Project = migrated
    default = Project.objects.get(tenant__name="oldco", is_default=True)
    assert set(ApiKey.objects.filter(tenant__name="oldco").values_list("project", flat=True)) == {
        default.id
    }


def test_the_default_project_allows_every_model(migrated):
    _, Project = migrated
    assert Project.objects.get(tenant__name="oldco").allowed_models == ["*"]


def test_the_default_project_is_named_default(migrated):
    _, Project = migrated
    assert Project.objects.get(tenant__name="oldco").name == "default"
