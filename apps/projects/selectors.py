from apps.projects.models import DEFAULT_PROJECT_NAME, Project


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
