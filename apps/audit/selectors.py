from datetime import datetime

from django.db.models import QuerySet

from apps.audit.models import AuditEvent
from apps.tenants.models import Tenant


def audit_event_list(
    *,
    tenant: Tenant,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """A tenant's events, newest first. ``action`` is an exact action ("key.issued") or a
    family ending with a dot ("key.")."""
    events = AuditEvent.objects.for_tenant(tenant)
    if action:
        events = (
            events.filter(action__startswith=action)
            if action.endswith(".")
            else events.filter(action=action)
        )
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    return events.order_by("-created_at", "-id")
