"""The BYOK opt-ins are staff's to set: a tenant's (staff tenant routes, Django admin) and
a backend's (staff backend routes, Django admin); a tenant's own admins cannot opt in."""

import pytest
from django.contrib.auth import get_user_model

from apps.audit.models import AuditEvent
from apps.catalog.models import Backend
from apps.tenants.models import Tenant
from tests.api.api_support import user_client

pytestmark = pytest.mark.django_db


def test_staff_create_a_tenant_that_allows_byok(org):
    staff = user_client(org.staff)
    created = staff.post(
        "/api/v1/staff/tenants", {"name": "initech", "byok_allowed": True}, format="json"
    )
    assert created.json()["byok_allowed"] is True


def test_a_tenant_created_without_the_flag_does_not_allow_byok(org):
    created = user_client(org.staff).post(
        "/api/v1/staff/tenants", {"name": "initech"}, format="json"
    )
    assert created.json()["byok_allowed"] is False


def test_staff_allow_byok_for_a_tenant(org):
    user_client(org.staff).patch(
        f"/api/v1/staff/tenants/{org.acme.id}", {"byok_allowed": True}, format="json"
    )
    assert Tenant.objects.get(id=org.acme.id).byok_allowed is True


def test_allowing_byok_is_in_the_audit_log(org):
    user_client(org.staff).patch(
        f"/api/v1/staff/tenants/{org.acme.id}", {"byok_allowed": True}, format="json"
    )
    event = AuditEvent.objects.filter(tenant=org.acme, action="tenant.updated").get()
    assert "byok_allowed" in event.details["changes"]


def test_a_flag_that_is_not_a_boolean_is_a_400_naming_it(org):
    response = user_client(org.staff).patch(
        f"/api/v1/staff/tenants/{org.acme.id}", {"byok_allowed": "sure"}, format="json"
    )
    assert set(response.json()) == {"byok_allowed"}


def test_a_tenants_own_admin_cannot_opt_in(org):
    response = user_client(org.admin).patch("/api/v1/tenant", {"byok_allowed": True}, format="json")
    assert response.status_code == 400
    assert Tenant.objects.get(id=org.acme.id).byok_allowed is False


def test_staff_let_a_backend_accept_callers_keys(org):
    backend = Backend.objects.get(name="fake")
    response = user_client(org.staff).patch(
        f"/api/v1/staff/backends/{backend.id}", {"byok_allowed": True}, format="json"
    )
    assert response.json()["byok_allowed"] is True


@pytest.fixture
def superuser_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567")
    client.force_login(user)
    return client


def test_the_backend_admin_form_offers_the_opt_in(org, superuser_client):
    backend = Backend.objects.get(name="fake")
    page = superuser_client.get(f"/admin/catalog/backend/{backend.id}/change/")
    assert b'name="byok_allowed"' in page.content


def test_the_tenant_admin_form_offers_the_opt_in(org, superuser_client):
    page = superuser_client.get(f"/admin/tenants/tenant/{org.acme.id}/change/")
    assert b'name="byok_allowed"' in page.content
