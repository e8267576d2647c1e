"""Shared fixtures for the management API, access and audit tests: two tenants (acme,
globex), acme members of every role, an outsider (globex's owner), a staff user, and an
admin token per tenant."""

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from apps.core.redis import sync_client
from apps.keys.models import ApiKey
from apps.provisioning.services import config_apply
from apps.tenants.models import AdminToken, Membership, Tenant
from apps.tenants.signin import KEY_PREFIX


@dataclass
class Org:
    acme: Tenant
    globex: Tenant
    acme_key: ApiKey
    globex_key: ApiKey
    acme_token: str
    globex_token: str
    owner: User
    admin: User
    viewer: User
    outsider: User  # owner of globex, nothing in acme
    staff: User

    def acme_token_row(self) -> AdminToken:
        return AdminToken.objects.get(tenant=self.acme, name="ops")


def org_document(upstream_url: str = "http://127.0.0.1:9/v1") -> dict:
    price = {
        "effective_from": "2026-01-01",
        "input_per_mtok": "1.00",
        "cached_input_per_mtok": "0.50",
        "output_per_mtok": "2.00",
    }
    return {
        "backends": [{"name": "fake", "base_url": upstream_url, "api_key": "upstream-secret"}],
        "models": [
            {
                "name": "test-model",
                "prices": [price],
                "deployments": [{"backend": "fake", "upstream_model": "up"}],
            },
            {"name": "other-model", "deployments": [{"backend": "fake", "upstream_model": "o"}]},
        ],
        "tenants": [
            {
                "name": "acme",
                "keys": [{"name": "main", "models": ["test-model"]}],
                "admin_tokens": [{"name": "ops"}],
            },
            {
                "name": "globex",
                "keys": [{"name": "main", "models": ["test-model"]}],
                "admin_tokens": [{"name": "ops"}],
            },
        ],
    }


def org_make(upstream_url: str = "http://127.0.0.1:9/v1") -> Org:
    result = config_apply(document=org_document(upstream_url))
    tokens = {t["tenant"]: t["secret"] for t in result.admin_tokens_created}
    acme, globex = Tenant.objects.get(name="acme"), Tenant.objects.get(name="globex")

    def member(username: str, tenant: Tenant, role: str) -> User:
        user = User.objects.create_user(username, f"{username}@example.com", "pw-" + username)
        Membership.objects.create(user=user, tenant=tenant, role=role)
        return user

    return Org(
        acme=acme,
        globex=globex,
        acme_key=ApiKey.objects.get(tenant=acme, name="main"),
        globex_key=ApiKey.objects.get(tenant=globex, name="main"),
        acme_token=tokens["acme"],
        globex_token=tokens["globex"],
        owner=member("olivia", acme, "owner"),
        admin=member("adam", acme, "admin"),
        viewer=member("vera", acme, "viewer"),
        outsider=member("gus", globex, "owner"),
        staff=User.objects.create_user("stella", "stella@example.com", "pw-stella", is_staff=True),
    )


def clear_signin_throttle() -> None:
    client = sync_client()
    for key in client.scan_iter(match=KEY_PREFIX + "*"):
        client.delete(key)


@pytest.fixture
def org(db, redis_url) -> Org:
    clear_signin_throttle()
    return org_make()


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def user_client(user: User) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client
