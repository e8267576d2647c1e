"""Projects: a tenant always has exactly one default project; a key always has a project
of its own tenant; limit blocks and tags are checked naming the field."""

import pytest
from django.db import IntegrityError, transaction

from apps.catalog.models import Model
from apps.keys.services import ApiKeyError, api_key_issue, api_key_update
from apps.limits.blocks import (
    LimitBlockInvalid,
    end_user_limits_validate,
    limit_block_validate,
    model_limits_validate,
)
from apps.projects.models import Project
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_create

pytestmark = pytest.mark.django_db


def test_a_new_tenant_gets_a_default_project():
    tenant = Tenant.objects.create(name="fresh")
    assert Project.objects.filter(tenant=tenant, is_default=True).count() == 1


def test_a_tenant_made_by_the_service_gets_a_default_project():
    tenant = tenant_create(name="serviced")
    assert tenant.projects.get().is_default


def test_a_second_default_project_is_refused():
    tenant = Tenant.objects.create(name="twice")
    with pytest.raises(IntegrityError), transaction.atomic():
        Project.objects.create(tenant=tenant, name="other", is_default=True)


def test_a_project_name_is_unique_per_tenant():
    tenant = Tenant.objects.create(name="names")
    with pytest.raises(IntegrityError), transaction.atomic():
        Project.objects.create(tenant=tenant, name="default")


def test_a_key_issued_without_a_project_goes_to_the_default_project():
    tenant = Tenant.objects.create(name="keyed")
    api_key, _ = api_key_issue(tenant=tenant, name="k")
    assert api_key.project == tenant.projects.get(is_default=True)


def test_a_key_may_be_issued_into_another_project_of_its_tenant():
    tenant = Tenant.objects.create(name="two-projects")
    web = Project.objects.create(tenant=tenant, name="web")
    api_key, _ = api_key_issue(tenant=tenant, name="k", project=web)
    assert api_key.project_id == web.id


def test_a_key_cannot_go_into_another_tenants_project():
    tenant = Tenant.objects.create(name="mine")
    other = Project.objects.create(tenant=Tenant.objects.create(name="theirs"), name="web")
    with pytest.raises(ValueError):
        api_key_issue(tenant=tenant, name="k", project=other)


def test_key_model_limits_are_stored_normalised():
    Model.objects.create(name="gemma")
    tenant = Tenant.objects.create(name="limited")
    api_key, _ = api_key_issue(
        tenant=tenant,
        name="k",
        model_limits={"gemma": {"rpm": 10, "budget": {"amount": "1.50"}}},
    )
    assert api_key.model_limits == {
        "gemma": {"rpm": 10, "budget": {"amount": "1.50", "period": "monthly"}}
    }


def test_a_bad_key_model_limit_names_the_field():
    Model.objects.create(name="gemma")
    tenant = Tenant.objects.create(name="badlimit")
    with pytest.raises(ApiKeyError) as caught:
        api_key_issue(tenant=tenant, name="k", model_limits={"gemma": {"rpm": -1}})
    assert caught.value.field == "model_limits.gemma.rpm"


def test_a_bad_default_tag_names_the_field():
    tenant = Tenant.objects.create(name="badtag")
    api_key, _ = api_key_issue(tenant=tenant, name="k")
    with pytest.raises(ApiKeyError) as caught:
        api_key_update(api_key=api_key, default_tags={"team": "=cmd|' /C calc'!A0"})
    assert caught.value.field == "default_tags.team"


def test_default_tags_are_stored():
    tenant = Tenant.objects.create(name="tagged")
    api_key, _ = api_key_issue(tenant=tenant, name="k", default_tags={"team": "web"})
    assert api_key.default_tags == {"team": "web"}


def _field(call) -> str:
    with pytest.raises(LimitBlockInvalid) as caught:
        call()
    return caught.value.field


def test_a_float_budget_is_refused_naming_the_amount():
    assert (
        _field(lambda: limit_block_validate({"budget": {"amount": 1.5}}, field="limits"))
        == "limits.budget.amount"
    )


def test_an_unknown_limit_is_refused_naming_it():
    assert _field(lambda: limit_block_validate({"rps": 1}, field="limits")) == "limits.rps"


def test_a_boolean_is_not_a_limit():
    assert _field(lambda: limit_block_validate({"tpm": True}, field="x")) == "x.tpm"


def test_an_end_user_budget_cannot_be_lifetime():
    assert (
        _field(lambda: end_user_limits_validate({"budget": {"amount": "1", "period": "lifetime"}}))
        == "end_user_limits.budget.period"
    )


def test_end_users_have_no_concurrency_limit():
    assert _field(lambda: end_user_limits_validate({"max_concurrent": 1})) == (
        "end_user_limits.max_concurrent"
    )


def test_model_limits_refuse_an_unknown_model_when_told_the_models():
    assert (
        _field(lambda: model_limits_validate({"nope": {}}, known_models=frozenset({"gemma"})))
        == "model_limits.nope"
    )


def test_an_amount_with_seven_decimals_is_refused():
    assert (
        _field(lambda: model_limits_validate({"m": {"budget": {"amount": "0.0000001"}}}))
        == "model_limits.m.budget.amount"
    )


def test_limit_blocks_take_the_budget_periods_of_keys_and_tenants():
    from apps.limits.blocks import PERIODS
    from apps.limits.fields import BudgetPeriod

    assert tuple(BudgetPeriod.values) == PERIODS
