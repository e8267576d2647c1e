from django.db import transaction
from django.db.models.signals import post_delete, post_save

from apps.core.redis import KEYS_INVALIDATE_CHANNEL, publish
from apps.projects.models import Project, ProjectMembership
from apps.projects.selectors import project_default_get
from apps.tenants.models import Membership, Tenant


def _tenant_saved(sender, instance: Tenant, created: bool, raw: bool = False, **_kwargs) -> None:
    if created and not raw:
        project_default_get(tenant_id=instance.id)


def _project_changed(sender, instance: Project, raw: bool = False, **_kwargs) -> None:
    """Every gateway process drops the project's keys once the change commits."""
    if raw:
        return
    from apps.keys.models import ApiKey

    hashes = [
        h
        for pair in ApiKey.objects.filter(project_id=instance.id).values_list(
            "key_hash", "previous_key_hash"
        )
        for h in pair
        if h
    ]

    def send() -> None:
        for key_hash in hashes:
            publish(KEYS_INVALIDATE_CHANNEL, key_hash)

    if hashes:
        transaction.on_commit(send)


def _member_removed(sender, instance: Membership, **_kwargs) -> None:
    """A user who leaves a tenant loses their roles in its projects (a later invitation
    starts without them)."""
    ProjectMembership.objects.filter(
        user_id=instance.user_id, project__tenant_id=instance.tenant_id
    ).delete()


def connect() -> None:
    post_save.connect(_tenant_saved, sender=Tenant, dispatch_uid="projects-tenant-default")
    post_save.connect(_project_changed, sender=Project, dispatch_uid="projects-saved")
    post_delete.connect(_project_changed, sender=Project, dispatch_uid="projects-deleted")
    post_delete.connect(_member_removed, sender=Membership, dispatch_uid="projects-member-left")
