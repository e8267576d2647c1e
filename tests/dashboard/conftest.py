"""Dashboard fixtures: two tenants (acme, globex) with keys, admin tokens, a statement, and
users of every role, plus staff."""

from dataclasses import dataclass
from datetime import date

import pytest
from django.contrib.auth import get_user_model

from apps.billing.models import Statement
from apps.tenants.models import Membership, Tenant
from tests.billing.billing_support import World, world_make

PASSWORD = "correct-horse-battery-staple-42"


@dataclass
class Team:
    world: World
    owner: object
    admin: object
    viewer: object
    outsider: object  # owner of globex only
    staff: object
    statement: Statement
    other_statement: Statement

    @property
    def acme(self) -> Tenant:
        return self.world.acme

    @property
    def globex(self) -> Tenant:
        return self.world.globex


def make_user(username: str, *, tenant: Tenant | None = None, role: str | None = None, **extra):
    user = get_user_model().objects.create_user(
        username=username, email=f"{username}@example.com", password=PASSWORD, **extra
    )
    if tenant is not None:
        Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


def team_make(upstream_url: str = "http://127.0.0.1:9/v1") -> Team:
    world = world_make(upstream_url)
    owner = make_user("olivia", tenant=world.acme, role=Membership.Role.OWNER)
    month = date.today().replace(day=1)
    return Team(
        world=world,
        owner=owner,
        admin=make_user("adam", tenant=world.acme, role=Membership.Role.ADMIN),
        viewer=make_user("vera", tenant=world.acme, role=Membership.Role.VIEWER),
        outsider=make_user("gus", tenant=world.globex, role=Membership.Role.OWNER),
        staff=make_user("sam", is_staff=True),
        statement=Statement.objects.create(
            tenant=world.acme, period_start=month, period_end=date(2100, 1, 1)
        ),
        other_statement=Statement.objects.create(
            tenant=world.globex, period_start=month, period_end=date(2100, 1, 1)
        ),
    )


@pytest.fixture
def team(db) -> Team:
    return team_make()
