"""Projects: list, create, detail (its keys and settings; edit), delete, and the members
with a role in it. Every member reads the projects they see (a project's viewers and
admins: only theirs); tenant admins create, change and delete projects and give roles."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.dashboard import selectors
from apps.dashboard.access import TenantAccess, access_required
from apps.dashboard.forms import ProjectForm, ProjectMemberForm
from apps.dashboard.views.common import page
from apps.projects.models import Project
from apps.projects.selectors import (
    member_user_find,
    project_get,
    project_list,
    project_membership_get,
    project_membership_list,
)
from apps.projects.services import (
    PROJECT_FIELDS,
    ProjectError,
    project_create,
    project_delete,
    project_membership_remove,
    project_membership_set,
    project_update,
)
from apps.tenants.models import Membership

WRITE = Membership.Role.ADMIN
FORM_TO_SERVICE = ("name", *sorted(PROJECT_FIELDS))


def _project(access: TenantAccess, project_id: int) -> Project:
    """The project, or 404 (another tenant's, or one the caller has no role in)."""
    project = project_get(access=access, project_id=project_id)
    if project is None:
        raise Http404("No such project.")
    return project


def _initial(project: Project) -> dict:
    return {name: getattr(project, name) for name in FORM_TO_SERVICE}


def _form_error(form: ProjectForm, exc: ProjectError) -> None:
    """Show a service's refusal on its field (``model_limits.gemma.rpm`` on
    model_limits), else on the form."""
    field = (exc.field or "").split(".")[0].split("[")[0]
    form.add_error(field if field in form.fields else None, f"{exc.field}: {exc.message}")


@login_required
@require_GET
def project_list_view(request: HttpRequest) -> HttpResponse:
    access = access_required(request)
    return page(
        request,
        "dashboard/projects.html",
        access,
        "projects",
        projects=project_list(access=access),
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_create_view(request: HttpRequest) -> HttpResponse:
    access = access_required(request, WRITE)
    form = ProjectForm(request.POST or None, initial={"allowed_models": ["*"]})
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in FORM_TO_SERVICE}
        try:
            project = project_create(tenant=access.tenant, actor=request.user, **fields)
        except ProjectError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"Project {project.name} created.")
            return redirect("dashboard:project", project_id=project.id)
    return page(request, "dashboard/project_form.html", access, "projects", form=form)


@login_required
@require_http_methods(["GET", "POST"])
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    """GET: the project, its keys and settings; POST: save the settings (tenant admins)."""
    access = access_required(request)
    project = _project(access, project_id)
    initial = _initial(project)
    if request.method == "POST":
        access = access_required(request, WRITE)
        form = ProjectForm(request.POST, initial=initial)
        if form.is_valid():
            changes = {
                name: form.cleaned_data[name]
                for name in FORM_TO_SERVICE
                if form.cleaned_data[name] != initial[name]
            }
            try:
                project_update(project=project, actor=request.user, **changes)
            except ProjectError as exc:
                _form_error(form, exc)
            else:
                messages.success(request, f"Project {project.name} saved.")
                return redirect("dashboard:project", project_id=project.id)
    else:
        form = ProjectForm(initial=initial)
    keys = list(selectors.key_list(access=access, project_id=project.id))
    selectors.key_statuses(keys, access)
    return page(
        request,
        "dashboard/project.html",
        access,
        "projects",
        project=project,
        form=form,
        keys=keys,
        role=access.project_role(project.id),
        can_issue=access.can_manage_keys_of(project.id),
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_delete_view(request: HttpRequest, project_id: int) -> HttpResponse:
    """GET: the confirmation page; POST: delete (tenant admins; never the default)."""
    access = access_required(request)
    project = _project(access, project_id)
    access = access_required(request, WRITE)
    if request.method == "POST":
        try:
            project_delete(project=project, actor=request.user)
        except ProjectError as exc:
            messages.error(request, exc.message)
            return redirect("dashboard:project", project_id=project.id)
        messages.success(request, f"Project {project.name} deleted.")
        return redirect("dashboard:projects")
    return page(request, "dashboard/project_delete.html", access, "projects", project=project)


def _members_page(request, access, project, form) -> HttpResponse:
    return page(
        request,
        "dashboard/project_members.html",
        access,
        "projects",
        project=project,
        members=project_membership_list(project=project),
        form=form,
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_members(request: HttpRequest, project_id: int) -> HttpResponse:
    """The members with a role in the project; POST gives one a role (tenant admins)."""
    access = access_required(request)
    project = _project(access, project_id)
    access = access_required(request, WRITE)
    form = ProjectMemberForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = member_user_find(tenant_id=access.tenant.id, identifier=form.cleaned_data["user"])
        if user is None:
            form.add_error("user", "Not a member of this tenant.")
        else:
            try:
                project_membership_set(
                    project=project, user=user, role=form.cleaned_data["role"], actor=request.user
                )
            except ProjectError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"{user.get_username()} is {form.cleaned_data['role']}.")
                return redirect("dashboard:project-members", project_id=project.id)
    return _members_page(request, access, project, form)


@login_required
@require_POST
def project_member_remove(
    request: HttpRequest, project_id: int, membership_id: int
) -> HttpResponse:
    access = access_required(request)
    project = _project(access, project_id)
    access = access_required(request, WRITE)
    membership = project_membership_get(project=project, membership_id=membership_id)
    if membership is None:
        raise Http404("No such member of this project.")
    project_membership_remove(membership=membership, actor=request.user)
    messages.success(request, f"{membership.user.get_username()} has no role in {project.name}.")
    return redirect("dashboard:project-members", project_id=project.id)
