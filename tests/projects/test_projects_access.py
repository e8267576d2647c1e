"""Who sees and manages which project, on the management API and the dashboard: another
tenant gets a 404 for every project route; a project admin manages only that project's
keys (another project's keys are a 404, as if they did not exist); a project viewer
reads; tenant owners and admins see and manage every project."""

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.keys.models import ApiKey
from apps.keys.services import api_key_issue
from apps.projects.models import Project, ProjectMembership
from apps.tenants.models import Membership
from apps.tenants.services import admin_token_issue, membership_remove
from tests.api.api_support import Org, token_client, user_client
from tests.api.api_support import org as org  # noqa: F401 - fixture


@dataclass
class Projects:
    web: Project
    mobile: Project
    web_key: ApiKey
    mobile_key: ApiKey
    pat: User  # tenant viewer, admin of web
    val: User  # tenant viewer, viewer of web


def _member(org: Org, username: str, project: Project, role: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw")
    Membership.objects.create(user=user, tenant=org.acme, role="viewer")
    ProjectMembership.objects.create(project=project, user=user, role=role)
    return user


@pytest.fixture
def projects(org) -> Projects:
    web = Project.objects.create(tenant=org.acme, name="web")
    mobile = Project.objects.create(tenant=org.acme, name="mobile")
    return Projects(
        web=web,
        mobile=mobile,
        web_key=api_key_issue(tenant=org.acme, name="web-key", project=web)[0],
        mobile_key=api_key_issue(tenant=org.acme, name="mobile-key", project=mobile)[0],
        pat=_member(org, "pat", web, "admin"),
        val=_member(org, "val", web, "viewer"),
    )


def ids(response) -> set[int]:
    return {row["id"] for row in response.json()}


# API: another tenant ---------------------------------------------------------------------


def project_routes(p: Projects) -> list[tuple[str, str]]:
    web = p.web.id
    member = ProjectMembership.objects.get(project=p.web, user=p.val).id
    return [
        ("get", f"/api/v1/projects/{web}"),
        ("patch", f"/api/v1/projects/{web}"),
        ("delete", f"/api/v1/projects/{web}"),
        ("get", f"/api/v1/projects/{web}/members"),
        ("post", f"/api/v1/projects/{web}/members"),
        ("patch", f"/api/v1/projects/{web}/members/{member}"),
        ("delete", f"/api/v1/projects/{web}/members/{member}"),
        ("get", f"/api/v1/projects/{web}/keys"),
        ("post", f"/api/v1/projects/{web}/keys"),
    ]


@pytest.mark.parametrize("caller", ["globex token", "globex owner"])
def test_every_project_route_of_another_tenant_is_404(org, projects, caller):
    client = token_client(org.globex_token) if caller == "globex token" else None
    client = client or user_client(org.outsider)
    body = {"name": "x", "role": "admin", "user": "pat", "rpm": 1}
    for method, path in project_routes(projects):
        response = getattr(client, method)(path, body, format="json")
        assert response.status_code == 404, (method, path)


def test_another_tenant_lists_only_its_own_projects(org, projects):
    listed = token_client(org.globex_token).get("/api/v1/projects").json()
    assert [p["name"] for p in listed] == ["default"]


def test_another_tenant_cannot_issue_a_key_into_a_project_it_does_not_own(org, projects):
    response = token_client(org.globex_token).post(
        "/api/v1/keys", {"name": "sneaky", "project": projects.web.id}, format="json"
    )
    assert response.status_code == 400
    assert "project" in response.json()


def test_another_tenants_attempts_leave_the_project_unchanged(org, projects):
    client = token_client(org.globex_token)
    client.patch(f"/api/v1/projects/{projects.web.id}", {"rpm": 1}, format="json")
    client.delete(f"/api/v1/projects/{projects.mobile.id}")
    projects.web.refresh_from_db()
    assert projects.web.rpm is None
    assert Project.objects.filter(id=projects.mobile.id).exists()


# API: a project admin --------------------------------------------------------------------


def test_a_project_admin_lists_only_their_projects(projects):
    assert ids(user_client(projects.pat).get("/api/v1/projects")) == {projects.web.id}


def test_a_project_admin_lists_only_their_projects_keys(projects):
    assert ids(user_client(projects.pat).get("/api/v1/keys")) == {projects.web_key.id}


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("patch", ""), ("post", "/rotate"), ("post", "/revoke")],
)
def test_another_projects_key_is_404_for_a_project_admin(projects, method, suffix):
    path = f"/api/v1/keys/{projects.mobile_key.id}{suffix}"
    response = getattr(user_client(projects.pat), method)(path, {"rpm": 1}, format="json")
    assert response.status_code == 404


def test_another_projects_key_is_untouched_by_a_project_admin(projects):
    client = user_client(projects.pat)
    client.patch(f"/api/v1/keys/{projects.mobile_key.id}", {"rpm": 1}, format="json")
    client.post(f"/api/v1/keys/{projects.mobile_key.id}/revoke")
    projects.mobile_key.refresh_from_db()
    assert (projects.mobile_key.rpm, projects.mobile_key.revoked_at) == (None, None)


def test_another_project_is_404_for_a_project_admin(projects):
    response = user_client(projects.pat).get(f"/api/v1/projects/{projects.mobile.id}")
    assert response.status_code == 404


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_changing_another_project_is_answered_as_a_missing_one(projects, method):
    """A project the caller does not see is a 404, exactly as a missing id is."""
    client = user_client(projects.pat)
    statuses = {
        getattr(client, method)(f"/api/v1/projects/{pk}", {"rpm": 1}, format="json").status_code
        for pk in (projects.mobile.id, 987654321)
    }
    assert statuses == {404}


def test_another_projects_key_list_is_404_for_a_project_admin(projects):
    client = user_client(projects.pat)
    assert client.get(f"/api/v1/projects/{projects.mobile.id}/keys").status_code == 404
    response = client.post(
        f"/api/v1/projects/{projects.mobile.id}/keys", {"name": "x"}, format="json"
    )
    assert response.status_code == 404


def test_a_project_admin_changes_their_projects_key(projects):
    response = user_client(projects.pat).patch(
        f"/api/v1/keys/{projects.web_key.id}", {"rpm": 9}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["rpm"] == 9


def test_a_project_admin_revokes_their_projects_key(projects):
    response = user_client(projects.pat).post(f"/api/v1/keys/{projects.web_key.id}/revoke")
    assert response.json()["status"] == "revoked"


def test_a_project_admin_issues_a_key_in_their_project(projects):
    response = user_client(projects.pat).post(
        f"/api/v1/projects/{projects.web.id}/keys", {"name": "fresh"}, format="json"
    )
    assert response.status_code == 201
    assert ApiKey.objects.get(name="fresh").project_id == projects.web.id


def test_a_key_names_its_project_on_the_key_routes(projects):
    response = user_client(projects.pat).post(
        "/api/v1/keys", {"name": "fresh", "project": projects.web.id}, format="json"
    )
    assert (response.json()["project"], response.json()["project_name"]) == (
        projects.web.id,
        "web",
    )


def test_a_project_admin_cannot_issue_into_the_default_project(projects):
    response = user_client(projects.pat).post("/api/v1/keys", {"name": "fresh"}, format="json")
    assert response.status_code == 400
    assert not ApiKey.objects.filter(name="fresh").exists()


def test_a_project_admin_cannot_move_a_key_into_another_project(projects):
    response = user_client(projects.pat).patch(
        f"/api/v1/keys/{projects.web_key.id}", {"project": projects.mobile.id}, format="json"
    )
    assert response.status_code == 400
    assert ApiKey.objects.get(id=projects.web_key.id).project_id == projects.web.id


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_a_project_admin_cannot_change_the_project_itself(projects, method):
    path = f"/api/v1/projects/{projects.web.id}"
    response = getattr(user_client(projects.pat), method)(path, {"rpm": 1}, format="json")
    assert response.status_code == 403


def test_a_project_admin_cannot_give_project_roles(projects):
    response = user_client(projects.pat).post(
        f"/api/v1/projects/{projects.web.id}/members",
        {"user": "val", "role": "admin"},
        format="json",
    )
    assert response.status_code == 403


def test_a_project_role_is_shown_to_its_holder(projects):
    listed = user_client(projects.pat).get("/api/v1/projects").json()
    assert listed[0]["role"] == "admin"


def test_an_admin_token_acts_with_its_creators_project_roles(org, projects):
    creator = User.objects.create_user("cleo", "cleo@example.com", "pw")
    membership = Membership.objects.create(user=creator, tenant=org.acme, role="owner")
    _token, secret = admin_token_issue(tenant=org.acme, name="cleo", actor=creator)
    membership.role = "viewer"
    membership.save()
    ProjectMembership.objects.create(project=projects.mobile, user=creator, role="admin")
    assert ids(token_client(secret).get("/api/v1/keys")) == {projects.mobile_key.id}


# API: a project viewer -------------------------------------------------------------------


def test_a_project_viewer_reads_their_projects_key(projects):
    response = user_client(projects.val).get(f"/api/v1/keys/{projects.web_key.id}")
    assert response.status_code == 200


def test_a_project_viewer_cannot_change_their_projects_key(projects):
    response = user_client(projects.val).patch(
        f"/api/v1/keys/{projects.web_key.id}", {"rpm": 1}, format="json"
    )
    assert response.status_code == 403


def test_a_project_viewer_cannot_issue_keys(projects):
    response = user_client(projects.val).post(
        f"/api/v1/projects/{projects.web.id}/keys", {"name": "x"}, format="json"
    )
    assert response.status_code == 403


def test_a_tenant_viewer_without_project_roles_reads_every_project(org, projects):
    assert len(user_client(org.viewer).get("/api/v1/projects").json()) == 3


# API: tenant owners and admins -----------------------------------------------------------


def test_a_tenant_owner_sees_every_project(org, projects):
    assert len(user_client(org.owner).get("/api/v1/projects").json()) == 3


def test_a_tenant_owner_sees_every_key(org, projects):
    assert ids(user_client(org.owner).get("/api/v1/keys")) == {
        org.acme_key.id,
        projects.web_key.id,
        projects.mobile_key.id,
    }


def test_a_tenant_admin_changes_any_projects_key(org, projects):
    response = user_client(org.admin).patch(
        f"/api/v1/keys/{projects.mobile_key.id}", {"rpm": 3}, format="json"
    )
    assert response.status_code == 200


def test_a_tenant_admin_moves_a_key_between_projects(org, projects):
    user_client(org.admin).patch(
        f"/api/v1/keys/{projects.mobile_key.id}", {"project": projects.web.id}, format="json"
    )
    assert ApiKey.objects.get(id=projects.mobile_key.id).project_id == projects.web.id


# API: managing projects and their members -----------------------------------------------


def test_a_tenant_admin_creates_a_project(org):
    response = user_client(org.admin).post(
        "/api/v1/projects",
        {"name": "batch", "allowed_models": ["test-model"], "rpm": 50},
        format="json",
    )
    assert response.status_code == 201
    assert Project.objects.get(tenant=org.acme, name="batch").rpm == 50


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "default"}, "name"),
        ({"name": "x", "allowed_models": ["nope"]}, "allowed_models[0]"),
        ({"name": "x", "model_limits": {"test-model": {"rpm": -1}}}, "model_limits.test-model.rpm"),
        ({"name": "x", "model_limits": {"nope": {"rpm": 1}}}, "model_limits.nope"),
        ({"name": "x", "model_limits": []}, "model_limits"),
        (
            {"name": "x", "end_user_limits": {"budget": {"amount": "1", "period": "lifetime"}}},
            "end_user_limits.budget.period",
        ),
        ({"name": "x", "end_user_limits": {"rpm": 1.5}}, "end_user_limits.rpm"),
        ({"name": "x y"}, "name"),
        ({"name": "x", "rpm": -1}, "rpm"),
    ],
)
def test_an_invalid_project_is_a_400_naming_the_field(org, body, field):
    response = user_client(org.admin).post("/api/v1/projects", body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_the_default_project_cannot_be_deleted(org):
    default = Project.objects.get(tenant=org.acme, is_default=True)
    response = user_client(org.owner).delete(f"/api/v1/projects/{default.id}")
    assert response.status_code == 400


def test_a_project_with_active_keys_cannot_be_deleted(org, projects):
    response = user_client(org.owner).delete(f"/api/v1/projects/{projects.web.id}")
    assert response.status_code == 400


def test_a_project_without_active_keys_is_deleted_and_its_revoked_keys_move(org, projects):
    client = user_client(org.owner)
    client.post(f"/api/v1/keys/{projects.mobile_key.id}/revoke")
    assert client.delete(f"/api/v1/projects/{projects.mobile.id}").status_code == 204
    assert ApiKey.objects.get(id=projects.mobile_key.id).project.is_default


def test_a_tenant_admin_gives_and_takes_a_project_role(org, projects):
    client = user_client(org.admin)
    path = f"/api/v1/projects/{projects.mobile.id}/members"
    created = client.post(path, {"user": "pat@example.com", "role": "viewer"}, format="json")
    assert created.status_code == 201
    assert ids(user_client(projects.pat).get("/api/v1/projects")) == {
        projects.web.id,
        projects.mobile.id,
    }
    assert client.delete(f"{path}/{created.json()['id']}").status_code == 204
    assert ids(user_client(projects.pat).get("/api/v1/projects")) == {projects.web.id}


def test_a_project_role_is_only_for_members_of_the_tenant(org, projects):
    response = user_client(org.admin).post(
        f"/api/v1/projects/{projects.web.id}/members",
        {"user": org.outsider.username, "role": "admin"},
        format="json",
    )
    assert response.status_code == 400
    assert "user" in response.json()


def test_leaving_the_tenant_drops_the_project_roles(org, projects):
    membership_remove(membership=Membership.objects.get(user=projects.pat, tenant=org.acme))
    assert not ProjectMembership.objects.filter(user=projects.pat).exists()


# Dashboard -------------------------------------------------------------------------------


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_dashboard_projects_list_shows_a_project_admin_only_their_projects(projects):
    page = browser(projects.pat).get("/dashboard/projects/").content.decode()
    assert 'data-project="web"' in page
    assert 'data-project="mobile"' not in page


def test_dashboard_another_project_is_404_for_a_project_admin(projects):
    client = browser(projects.pat)
    assert client.get(f"/dashboard/projects/{projects.mobile.id}/").status_code == 404


def test_dashboard_keys_list_shows_a_project_admin_only_their_projects_keys(projects):
    page = browser(projects.pat).get("/dashboard/keys/").content.decode()
    assert projects.web_key.prefix in page
    assert projects.mobile_key.prefix not in page


@pytest.mark.parametrize("suffix", ["", "policy/", "rotate/", "revoke/"])
def test_dashboard_another_projects_key_is_404_for_a_project_admin(projects, suffix):
    client = browser(projects.pat)
    assert client.post(f"/dashboard/keys/{projects.mobile_key.id}/{suffix}").status_code == 404
    projects.mobile_key.refresh_from_db()
    assert projects.mobile_key.revoked_at is None


def test_dashboard_a_project_admin_revokes_their_projects_key(projects):
    browser(projects.pat).post(f"/dashboard/keys/{projects.web_key.id}/revoke/")
    projects.web_key.refresh_from_db()
    assert projects.web_key.revoked_at is not None


def test_dashboard_a_project_admin_issues_a_key_in_their_project(projects, redis_url):
    browser(projects.pat).post(
        "/dashboard/keys/new/",
        {"name": "fresh", "project": projects.web.id, "budget_period": "monthly"},
    )
    assert ApiKey.objects.get(name="fresh").project_id == projects.web.id


def test_dashboard_a_project_admin_cannot_issue_into_another_project(projects):
    response = browser(projects.pat).post(
        "/dashboard/keys/new/",
        {"name": "fresh", "project": projects.mobile.id, "budget_period": "monthly"},
    )
    assert response.status_code == 200  # the form again, with its error
    assert not ApiKey.objects.filter(name="fresh").exists()


def test_dashboard_a_project_viewer_cannot_revoke_their_projects_key(projects):
    response = browser(projects.val).post(f"/dashboard/keys/{projects.web_key.id}/revoke/")
    assert response.status_code == 403


def test_dashboard_a_project_admin_cannot_edit_the_project(projects):
    response = browser(projects.pat).post(f"/dashboard/projects/{projects.web.id}/", {})
    assert response.status_code == 403


def test_dashboard_a_tenant_owner_sees_every_key(org, projects):
    page = browser(org.owner).get("/dashboard/keys/").content.decode()
    for api_key in (org.acme_key, projects.web_key, projects.mobile_key):
        assert api_key.prefix in page


def test_dashboard_a_tenant_owner_edits_a_project(org, projects):
    browser(org.owner).post(
        f"/dashboard/projects/{projects.web.id}/",
        {"name": "web", "allowed_models": ["*"], "rpm": "30", "budget_period": "monthly"},
    )
    projects.web.refresh_from_db()
    assert projects.web.rpm == 30


def test_dashboard_an_invalid_model_limit_is_shown_on_its_field(org, projects):
    response = browser(org.owner).post(
        f"/dashboard/projects/{projects.web.id}/",
        {
            "name": "web",
            "allowed_models": ["*"],
            "budget_period": "monthly",
            "model_limits": '{"test-model": {"rpm": "fast"}}',
        },
    )
    assert "model_limits.test-model.rpm" in response.content.decode()


def test_dashboard_another_tenants_project_is_404(org, projects):
    client = browser(org.outsider)
    for path in ("", "members/", "delete/"):
        assert client.get(f"/dashboard/projects/{projects.web.id}/{path}").status_code == 404


# 404 before 403, on the API and the dashboard alike ---------------------------------------
# A project (or a key of one) the caller does not see is a 404 whatever the method and
# whatever their role (as another tenant's); one they see but may not change is a 403.


def invisible_api_routes(p: Projects) -> list[tuple[str, str]]:
    """Every API route on the mobile project and its key (pat and val see only web)."""
    mobile, key = p.mobile.id, p.mobile_key.id
    mo = User.objects.create_user("mo", "mo@example.com", "pw")
    Membership.objects.create(user=mo, tenant=p.mobile.tenant, role="viewer")
    member_id = ProjectMembership.objects.create(project=p.mobile, user=mo, role="viewer").id
    return [
        ("get", f"/api/v1/projects/{mobile}"),
        ("patch", f"/api/v1/projects/{mobile}"),
        ("delete", f"/api/v1/projects/{mobile}"),
        ("get", f"/api/v1/projects/{mobile}/members"),
        ("post", f"/api/v1/projects/{mobile}/members"),
        ("patch", f"/api/v1/projects/{mobile}/members/{member_id}"),
        ("delete", f"/api/v1/projects/{mobile}/members/{member_id}"),
        ("get", f"/api/v1/projects/{mobile}/keys"),
        ("post", f"/api/v1/projects/{mobile}/keys"),
        ("get", f"/api/v1/keys/{key}"),
        ("patch", f"/api/v1/keys/{key}"),
        ("post", f"/api/v1/keys/{key}/rotate"),
        ("post", f"/api/v1/keys/{key}/revoke"),
    ]


@pytest.mark.parametrize("who", ["pat", "val"])
def test_every_api_route_of_an_invisible_project_is_404(projects, who):
    client = user_client(getattr(projects, who))
    body = {"name": "x", "role": "admin", "user": "pat", "rpm": 1}
    statuses = {
        (method, path): getattr(client, method)(path, body, format="json").status_code
        for method, path in invisible_api_routes(projects)
    }
    assert {route for route, code in statuses.items() if code != 404} == set()


def test_an_invisible_project_is_untouched_by_every_api_route(projects):
    client = user_client(projects.pat)
    body = {"name": "x", "role": "admin", "user": "pat", "rpm": 1}
    for method, path in invisible_api_routes(projects):
        getattr(client, method)(path, body, format="json")
    projects.mobile.refresh_from_db()
    projects.mobile_key.refresh_from_db()
    assert (projects.mobile.rpm, projects.mobile_key.rpm, projects.mobile_key.revoked_at) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("patch", ""), ("delete", ""), ("get", "/members"), ("post", "/members")],
)
def test_a_visible_project_a_project_admin_may_not_change_is_403(projects, method, suffix):
    path = f"/api/v1/projects/{projects.web.id}{suffix}"
    body = {"rpm": 1, "user": "val", "role": "admin"}
    response = getattr(user_client(projects.pat), method)(path, body, format="json")
    assert response.status_code == 403


@pytest.mark.parametrize(("method", "suffix"), [("patch", ""), ("post", "/revoke")])
def test_a_visible_key_a_project_viewer_may_not_change_is_403(projects, method, suffix):
    path = f"/api/v1/keys/{projects.web_key.id}{suffix}"
    response = getattr(user_client(projects.val), method)(path, {"rpm": 1}, format="json")
    assert response.status_code == 403


def test_a_project_viewer_issuing_into_an_invisible_project_gets_404(projects):
    response = user_client(projects.val).post(
        f"/api/v1/projects/{projects.mobile.id}/keys", {"name": "x"}, format="json"
    )
    assert response.status_code == 404


def invisible_dashboard_routes(p: Projects) -> list[tuple[str, str]]:
    mobile, key = p.mobile.id, p.mobile_key.id
    return [
        ("get", f"/dashboard/projects/{mobile}/"),
        ("post", f"/dashboard/projects/{mobile}/"),
        ("get", f"/dashboard/projects/{mobile}/delete/"),
        ("post", f"/dashboard/projects/{mobile}/delete/"),
        ("get", f"/dashboard/projects/{mobile}/members/"),
        ("post", f"/dashboard/projects/{mobile}/members/"),
        ("get", f"/dashboard/keys/{key}/"),
        ("post", f"/dashboard/keys/{key}/"),
        ("post", f"/dashboard/keys/{key}/policy/"),
        ("get", f"/dashboard/keys/{key}/rotate/"),
        ("post", f"/dashboard/keys/{key}/rotate/"),
        ("get", f"/dashboard/keys/{key}/revoke/"),
        ("post", f"/dashboard/keys/{key}/revoke/"),
    ]


@pytest.mark.parametrize("who", ["pat", "val"])
def test_every_dashboard_route_of_an_invisible_project_is_404(projects, who):
    client = browser(getattr(projects, who))
    statuses = {
        (method, path): getattr(client, method)(path).status_code
        for method, path in invisible_dashboard_routes(projects)
    }
    assert {route for route, code in statuses.items() if code != 404} == set()


@pytest.mark.parametrize(
    ("method", "suffix"), [("post", ""), ("get", "delete/"), ("get", "members/")]
)
def test_dashboard_a_visible_project_a_project_admin_may_not_change_is_403(
    projects, method, suffix
):
    response = getattr(browser(projects.pat), method)(
        f"/dashboard/projects/{projects.web.id}/{suffix}"
    )
    assert response.status_code == 403


# Tenant-wide alerts and webhooks: not for a member narrowed to some projects ----------------

TENANT_WIDE_API = [
    "/api/v1/alerts/settings",
    "/api/v1/alerts/events",
    "/api/v1/webhooks",
]


@pytest.mark.parametrize("path", TENANT_WIDE_API)
def test_a_narrowed_member_cannot_read_the_tenants_alerts_or_webhooks(projects, path):
    assert user_client(projects.pat).get(path).status_code == 403


@pytest.mark.parametrize("path", TENANT_WIDE_API)
def test_a_tenant_owner_reads_the_tenants_alerts_and_webhooks(org, projects, path):
    assert user_client(org.owner).get(path).status_code == 200


@pytest.mark.parametrize("path", ["/dashboard/alerts/", "/dashboard/webhooks/"])
def test_dashboard_a_narrowed_member_cannot_open_alerts_or_webhooks(projects, path):
    assert browser(projects.pat).get(path).status_code == 403


def test_dashboard_a_narrowed_member_has_no_alerts_link(projects):
    page = browser(projects.pat).get("/dashboard/keys/").content.decode()
    assert 'href="/dashboard/alerts/"' not in page
