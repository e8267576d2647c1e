from django.db.models.signals import post_delete, post_save

from apps.catalog.models import Backend, Deployment, Model, Price
from apps.catalog.services import catalog_invalidate


def _changed(**_kwargs) -> None:
    catalog_invalidate()


def connect() -> None:
    for model in (Backend, Model, Deployment, Price):
        post_save.connect(_changed, sender=model, dispatch_uid=f"catalog-save-{model.__name__}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"catalog-del-{model.__name__}")
