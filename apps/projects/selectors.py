from django.db.models import Count, Q, QuerySet

from apps.projects.models import DEFAULT_PROJECT_NAME, Project, ProjectMembership
from apps.tenants.models import Membership


def project_default_get(*, tenant_id: int) -> Project:
    """The tenant's default project, made now if it has none (a tenant created around the
    signal, e.g. by a fixture's bulk insert)."""
    project = Project.objects.filter(tenant_id=tenant_id, is_default=True).first()
    if project is None:
        project, _ = Project.objects.get_or_create(
            tenant_id=tenant_id, is_default=True, defaults={"name": _free_name(tenant_id)}
        )
    return project


def _free_name(tenant_id: int) -> str:
    taken = set(Project.objects.filter(tenant_id=tenant_id).values_list("name", flat=True))
    name, n = DEFAULT_PROJECT_NAME, 1
    while name in taken:
        n += 1
        name = f"{DEFAULT_PROJECT_NAME}-{n}"
    return name


def project_list(*, access) -> QuerySet[Project]:
    """The projects of the caller's tenant that the caller may see (a project viewer or
    admin: only theirs), the default first, then by name; each with ``active_keys``."""
    return (
        Project.objects.for_access(access)
        .annotate(active_keys=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True)))
        .order_by("-is_default", "name")
    )


def project_get(*, access, project_id: int) -> Project | None:
    """The project if the caller may see it; another tenant's, or one the caller has no
    role in, is None (a 404)."""
    return Project.objects.for_access(access).select_related("tenant").filter(id=project_id).first()


def project_membership_list(*, project: Project) -> QuerySet[ProjectMembership]:
    return project.memberships.select_related("user").order_by("user__username")


def project_membership_get(*, project: Project, membership_id: int) -> ProjectMembership | None:
    return (
        project.memberships.select_related("user", "project__tenant")
        .filter(id=membership_id)
        .first()
    )


def member_user_find(*, tenant_id: int, identifier: str):
    """The user, a member of the tenant, whose username or email is ``identifier``
    (case-insensitive); None for anyone else."""
    membership = (
        Membership.objects.select_related("user")
        .filter(tenant_id=tenant_id)
        .filter(Q(user__username__iexact=identifier) | Q(user__email__iexact=identifier))
        .order_by("id")
        .first()
    )
    return membership.user if membership is not None else None
