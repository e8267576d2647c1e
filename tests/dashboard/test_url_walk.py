"""The URL walk: every route of the dashboard (/dashboard/) and of the management API
(/api/), taken from Django's resolver when the test runs (routes added later are walked
too), requested by every kind of caller with its path parameters filled from objects of
the caller's tenant, of another tenant, and with ids that do not exist.

* nothing answers 5xx;
* anything of another tenant is a 404 — or, where a caller's role is refused before any
  lookup, exactly what a non-existent id gets (so the answer says nothing about it); never
  2xx/3xx;
* viewers read their tenant's pages but every write (POST, PUT, PATCH, DELETE) is a 403;
* staff pages are not for anyone else (403/404).
"""

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from apps.alerts.models import WebhookEndpoint
from apps.tenants.models import AdminToken, Membership
from apps.tenants.services import admin_token_issue
from tests.dashboard.conftest import Team, make_user

PREFIXES = ("dashboard/", "api/")
PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
MISSING_ID = "987654321"
WRITES = ("post", "put", "patch", "delete")
# Writes any signed-in viewer may make: choosing their own tenant in the switcher.
VIEWER_WRITES_ALLOWED = {"dashboard:switch-tenant"}
# Public on purpose: the API's OpenAPI schema and its docs page (no tenant data in them).
PUBLIC_ROUTES = {"api-schema", "api-docs"}


@dataclass(frozen=True)
class Route:
    path: str  # e.g. "dashboard/keys/<int:key_id>/"
    name: str
    api: bool

    @property
    def params(self) -> list[str]:
        return [m.group("name") for m in PARAM.finditer(self.path)]

    @property
    def staff_only(self) -> bool:
        return "staff" in self.path.split("/")

    def fill(self, values: dict[str, str]) -> str:
        return "/" + PARAM.sub(lambda m: values[m.group("name")], self.path)


def walk(patterns, prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), ns)
        elif isinstance(pattern, URLPattern):
            path = prefix + str(pattern.pattern)
            if path.startswith(PREFIXES) and not path.startswith("^"):
                yield Route(path, f"{namespace}{pattern.name}", path.startswith("api/"))


def routes() -> list[Route]:
    return list(walk(get_resolver().url_patterns))


@dataclass
class Caller:
    label: str
    client: Client
    tenant: str | None  # None: staff (every tenant) or anonymous
    role: str | None
    api_only: bool = False  # admin tokens: the management API only
    anonymous: bool = False


def object_ids(team: Team, victims: dict) -> dict[str, dict[str, str]]:
    """Per path parameter name: its value for an object of acme and of globex."""
    acme, globex = team.acme, team.globex
    pairs = {
        "key_id": (team.world.acme_key2.id, team.world.globex_key.id),
        "project_id": (victims["acme_project"].id, victims["globex_project"].id),
        "statement_id": (team.statement.id, team.other_statement.id),
        "membership_id": (victims["acme_member"].id, victims["globex_member"].id),
        "member_id": (victims["acme_member"].id, victims["globex_member"].id),
        "token_id": (victims["acme_token"].id, victims["globex_token"].id),
        "tenant_id": (acme.id, globex.id),
        "endpoint_id": (victims["acme_endpoint"].id, victims["globex_endpoint"].id),
    }
    return {name: {"acme": str(a), "globex": str(g)} for name, (a, g) in pairs.items()}


def platform_ids() -> dict[str, str]:
    """Staff objects (not of a tenant)."""
    from apps.billing.models import RateCard
    from apps.catalog.models import Backend, Deployment, Model, Price
    from apps.tenants.models import Tenant

    card = RateCard.objects.create(
        tenant=Tenant.objects.get(name="acme"), effective_from="2026-01-01T00:00Z"
    )
    return {
        "backend_id": str(Backend.objects.order_by("id").first().id),
        "model_id": str(Model.objects.order_by("id").first().id),
        "deployment_id": str(Deployment.objects.order_by("id").first().id),
        "price_id": str(Price.objects.order_by("id").first().id),
        "rate_card_id": str(card.id),
    }


def request(caller: Caller, method: str, url: str, api: bool) -> int:
    """The status; a redirect to the sign-in page counts as 401."""
    if api and method != "get":
        response = getattr(caller.client, method)(
            url, data=json.dumps({}), content_type="application/json"
        )
    elif method == "get":
        response = caller.client.get(url)
    else:
        response = getattr(caller.client, method)(url, data={})
    if response.status_code == 302 and response["Location"].startswith("/accounts/login/"):
        return 401
    return response.status_code


def _project_with_key(tenant):
    from apps.keys.services import api_key_issue
    from apps.projects.models import Project

    project = Project.objects.create(tenant=tenant, name="walked")
    api_key_issue(tenant=tenant, name="walked-key", project=project)
    return project


@pytest.fixture
def callers(team) -> list[Caller]:
    def signed_in(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    def token(secret: str) -> Client:
        return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")

    # Read-only callers first: the writers after them revoke and remove things.
    return [
        Caller("viewer", signed_in(team.viewer), "acme", "viewer"),
        Caller("outsider (globex owner)", signed_in(team.outsider), "globex", "owner"),
        Caller("anonymous", Client(), None, None, anonymous=True),
        Caller("globex admin token", token(team.world.globex_token), "globex", "admin", True),
        Caller("acme admin token", token(team.world.acme_token), "acme", "admin", True),
        Caller("admin", signed_in(team.admin), "acme", "admin"),
        Caller("owner", signed_in(team.owner), "acme", "owner"),
        Caller("staff", signed_in(team.staff), None, None),
    ]


def test_every_route_is_walked(team):
    names = {r.name for r in routes()}
    assert {"dashboard:keys", "dashboard:key-revoke", "dashboard:staff-pipeline"} <= names
    assert {"dashboard:staff-margins", "api-staff-rate-cards", "api-staff-rate-card"} <= names
    assert "usage-records-csv" in names  # the billing API; the management API joins it
    assert {"dashboard:projects", "dashboard:project", "dashboard:project-members"} <= names
    assert {"api-projects", "api-project", "api-project-members", "api-project-keys"} <= names


@pytest.mark.timeout(600)
def test_url_walk_isolation_roles_and_no_5xx(team, callers):
    victims = {
        "acme_member": Membership.objects.create(
            user=make_user("victor"), tenant=team.acme, role=Membership.Role.VIEWER
        ),
        "globex_member": Membership.objects.get(tenant=team.globex, user=team.outsider),
        "acme_token": admin_token_issue(tenant=team.acme, name="walk-victim")[0],
        "globex_token": AdminToken.objects.get(tenant=team.globex, name="ops"),
        # Non-default projects with an active key each: a walked DELETE is refused.
        **{
            f"{tenant.name}_project": _project_with_key(tenant)
            for tenant in (team.acme, team.globex)
        },
        **{
            f"{tenant.name}_endpoint": WebhookEndpoint.objects.create(
                tenant=tenant, url="https://93.184.216.34/h", secret_encrypted="x"
            )
            for tenant in (team.acme, team.globex)
        },
    }
    ids = object_ids(team, victims)
    platform = platform_ids()
    failures: list[str] = []
    walked = 0

    def fail(caller: Caller, method: str, url: str, status: int, why: str) -> None:
        failures.append(f"{caller.label:>24} {method.upper():6} {url} -> {status}: {why}")

    for caller, route in itertools.product(callers, routes()):
        if caller.api_only and not route.api:
            continue
        methods = ["get", *WRITES] if route.api else ["get", "post"]
        home = caller.tenant or "acme"
        foreign = "globex" if home == "acme" else "acme"
        tenant_params = [p for p in route.params if p in ids and not route.staff_only]
        fills = {"home": {}, "foreign": {}, "missing": {}}
        for name in route.params:
            if name in ids:
                fills["home"][name] = ids[name][home]
                fills["foreign"][name] = ids[name][foreign]
            else:
                fills["home"][name] = fills["foreign"][name] = platform.get(name, "1")
            fills["missing"][name] = MISSING_ID
        for method in methods:
            statuses = {}
            for kind in ("missing", "foreign", "home") if tenant_params else ("home",):
                url = route.fill(fills[kind])
                status = request(caller, method, url, route.api)
                statuses[kind] = status
                walked += 1
                if status >= 500:
                    fail(caller, method, url, status, "server error")
                if caller.anonymous:
                    if status not in (401, 403, 405) and route.name not in PUBLIC_ROUTES:
                        fail(caller, method, url, status, "answered without sign-in")
                    continue
                if caller.tenant is None:
                    continue  # staff may see every tenant
                if route.staff_only and status not in (401, 403, 404, 405):
                    fail(caller, method, url, status, "staff page open to a non-staff caller")
                if kind == "foreign":
                    if status < 400:
                        fail(caller, method, url, status, "another tenant's object answered")
                    elif status != 404 and status != statuses["missing"]:
                        fail(
                            caller,
                            method,
                            url,
                            status,
                            f"differs from a missing id ({statuses['missing']})",
                        )
                if kind == "home" and caller.role == "viewer" and not route.staff_only:
                    if method in WRITES and route.name not in VIEWER_WRITES_ALLOWED:
                        if status not in (403, 405):
                            fail(caller, method, url, status, "a viewer could write")
                    elif method == "get" and status not in (200, 302, 400, 403, 405):
                        # 302: within the dashboard (its home); 400: a report without
                        # its required parameters; 403: pages of
                        # writes (the new-key form) or for owners (the audit log)
                        fail(caller, method, url, status, "a viewer could not read")
    assert walked > 200
    assert not failures, "\n".join(failures)


# Tenant-wide reads: the statements and the balance (with its journal) are the tenant's
# figures as a whole, which a member narrowed to some projects does not read.
TENANT_WIDE_ROUTES = {
    "statements",
    "statement-detail",
    "api-balance",
    "api-balance-entries",
    "api-balance-entries-csv",
    "dashboard:statements",
    "dashboard:statement-detail",
    "dashboard:balance",
}


@pytest.mark.timeout(600)
def test_url_walk_a_project_member_never_reaches_another_projects_objects(team):
    """A tenant viewer who is admin of one project, on every route that names a project or
    a key: another project's object of the same tenant is a 404 whatever the method (as a
    missing id, as another tenant's), never 2xx/3xx/403; the tenant-wide reads are a 403."""
    from apps.keys.models import ApiKey
    from apps.projects.models import Project, ProjectMembership

    own = Project.objects.create(tenant=team.acme, name="own")
    other = _project_with_key(team.acme)
    other_key = ApiKey.objects.get(tenant=team.acme, name="walked-key")
    member = make_user("pam", tenant=team.acme, role=Membership.Role.VIEWER)
    ProjectMembership.objects.create(project=own, user=member, role="admin")
    client = Client()
    client.force_login(member)
    caller = Caller("project admin", client, "acme", "viewer")
    hidden = {"key_id": str(other_key.id), "project_id": str(other.id)}
    failures: list[str] = []
    walked = 0
    for route in routes():
        if route.staff_only or not set(route.params) & set(hidden):
            continue
        for method in ["get", *WRITES] if route.api else ["get", "post"]:
            fill = {name: hidden.get(name, MISSING_ID) for name in route.params}
            status = request(caller, method, route.fill(fill), route.api)
            walked += 1
            if status not in (404, 405):
                failures.append(f"{method.upper():6} {route.fill(fill)} -> {status}")
    for route in routes():
        if route.name in TENANT_WIDE_ROUTES:
            fill = {name: str(team.statement.id) for name in route.params}
            status = request(caller, "get", route.fill(fill), route.api)
            if status != 403:
                failures.append(f"GET    {route.fill(fill)} -> {status} (tenant-wide: 403)")
    assert walked > 20
    assert not failures, "\n".join(failures)
