from django.db.models import Q
from django.utils import timezone

from apps.keys.models import ApiKey


def api_key_get_by_hash(key_hash: str) -> ApiKey | None:
    """The key whose current secret, or previous secret still in its grace, has this hash
    (whether it is revoked or expired is the caller's to check)."""
    return (
        ApiKey.objects.select_related("tenant", "project")
        .filter(
            Q(key_hash=key_hash)
            | Q(previous_key_hash=key_hash, previous_valid_until__gt=timezone.now())
        )
        .first()
    )


def api_key_list(*, access, status: str | None = None, project_id: int | None = None):
    """The keys the caller may see (their tenant's, in the projects visible to them),
    newest first; ``status``: active, revoked or expired; ``project_id``: one project's."""
    keys = ApiKey.objects.for_access(access).select_related("created_by", "project")
    if project_id is not None:
        keys = keys.filter(project_id=project_id)
    now = timezone.now()
    if status == "active":
        keys = keys.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )
    elif status == "revoked":
        keys = keys.filter(revoked_at__isnull=False)
    elif status == "expired":
        keys = keys.filter(revoked_at__isnull=True, expires_at__lte=now)
    return keys.order_by("-created_at", "-id")


def api_key_get(*, access, key_id: int) -> ApiKey | None:
    """The key with this id if the caller may see it; another tenant's, or one of a
    project the caller does not see, is None (a 404)."""
    return (
        ApiKey.objects.for_access(access)
        .select_related("tenant", "project")
        .filter(id=key_id)
        .first()
    )


def api_key_name_taken(*, tenant, name: str, exclude_id: int | None = None) -> bool:
    """An active key of the tenant already has this name."""
    keys = ApiKey.objects.filter(tenant=tenant, name=name, revoked_at__isnull=True)
    if exclude_id is not None:
        keys = keys.exclude(id=exclude_id)
    return keys.exists()
