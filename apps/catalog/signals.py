import contextlib

import redis
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from apps.catalog.models import Backend, Deployment, Model, Price
from apps.catalog.services import catalog_invalidate


def _changed(**_kwargs) -> None:
    catalog_invalidate()


def _deployment_deleted(instance: Deployment, **_kwargs) -> None:
    """A deleted deployment's breaker goes with it (once the deletion commits)."""
    deployment_id = instance.id

    def forget() -> None:
        from apps.core.redis import sync_client
        from apps.gateway.upstream.health import breakers_forget

        with contextlib.suppress(redis.RedisError, OSError):  # it expires within a day
            breakers_forget(sync_client(), [deployment_id])

    transaction.on_commit(forget)


def connect() -> None:
    for model in (Backend, Model, Deployment, Price):
        post_save.connect(_changed, sender=model, dispatch_uid=f"catalog-save-{model.__name__}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"catalog-del-{model.__name__}")
    post_delete.connect(
        _deployment_deleted, sender=Deployment, dispatch_uid="catalog-del-deployment-breaker"
    )
