"""apps.tenants.access: the one place that decides a request's tenant and role, for the
API and the dashboard alike."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.test import RequestFactory

from apps.tenants.access import (
    SESSION_TENANT_KEY,
    TenantNotSelected,
    require_role,
    session_tenant_set,
    tenant_access_for,
    tenants_for_user,
)
from apps.tenants.models import Membership


def request_for(user=None, token=None, **query):
    request = RequestFactory().get("/dashboard/", query)
    request.user = user or AnonymousUser()
    request.session = SessionStore()
    if token is not None:
        request.auth = token
    return request


def test_members_get_their_membership_role(org):
    for user, role in ((org.owner, "owner"), (org.admin, "admin"), (org.viewer, "viewer")):
        access = tenant_access_for(request_for(user))
        assert (access.tenant, access.role, access.user, access.token) == (
            org.acme,
            role,
            user,
            None,
        )
        assert access.actor == user


def test_admin_token_acts_for_its_tenant_as_admin(org):
    token = org.acme_token_row()
    access = tenant_access_for(request_for(token=token))
    assert (access.tenant, access.role, access.token, access.actor) == (
        org.acme,
        "admin",
        token,
        token,
    )
    assert tenant_access_for(request_for(token=token, tenant="acme")).tenant == org.acme
    with pytest.raises(Http404):
        tenant_access_for(request_for(token=token, tenant="globex"))


def test_another_tenant_is_404_never_403(org):
    for name in ("acme", "nope", "bad name", "x" * 100, "a\x00b"):
        with pytest.raises(Http404):
            tenant_access_for(request_for(org.outsider, tenant=name))


def test_staff_any_tenant_as_owner_but_must_name_one(org):
    access = tenant_access_for(request_for(org.staff, tenant="globex"))
    assert (access.tenant, access.role, access.is_staff) == (org.globex, "owner", True)
    with pytest.raises(TenantNotSelected):
        tenant_access_for(request_for(org.staff))
    with pytest.raises(Http404):
        tenant_access_for(request_for(org.staff, tenant="nope"))


def test_several_memberships_use_the_session_or_the_query(org):
    Membership.objects.create(user=org.viewer, tenant=org.globex, role="admin")
    with pytest.raises(TenantNotSelected):
        tenant_access_for(request_for(org.viewer))
    assert tenant_access_for(request_for(org.viewer, tenant="globex")).role == "admin"
    request = request_for(org.viewer)
    access = session_tenant_set(request, tenant_name="globex")
    assert (access.tenant, access.role) == (org.globex, "admin")
    assert request.session[SESSION_TENANT_KEY] == "globex"
    # The query wins over the session.
    request = request_for(org.viewer, tenant="acme")
    request.session[SESSION_TENANT_KEY] = "globex"
    assert tenant_access_for(request).role == "viewer"
    # A tenant they are not in cannot be switched to, and is not kept in the session.
    request = request_for(org.outsider)
    with pytest.raises(Http404):
        session_tenant_set(request, tenant_name="acme")
    assert SESSION_TENANT_KEY not in request.session
    assert [(t.name, r) for t, r in tenants_for_user(org.viewer)] == [
        ("acme", "viewer"),
        ("globex", "admin"),
    ]
    assert len(tenants_for_user(org.staff)) == 2


def test_anonymous_is_refused(org):
    with pytest.raises(PermissionDenied):
        tenant_access_for(request_for())


def test_require_role(org):
    viewer = tenant_access_for(request_for(org.viewer))
    assert require_role(viewer, "viewer") is viewer
    for role in ("admin", "owner"):
        with pytest.raises(PermissionDenied):
            require_role(viewer, role)
    owner = tenant_access_for(request_for(org.owner))
    assert require_role(owner, "admin") is owner and owner.can_write and owner.is_owner
    with pytest.raises(ValueError):
        require_role(owner, "god")


def test_resolved_once_per_request(org, django_assert_num_queries):
    request = request_for(org.owner)
    first = tenant_access_for(request)
    with django_assert_num_queries(0):
        assert tenant_access_for(request) is first
