from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "apps.billing"
    label = "billing"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.billing.models import RateCard, RateCardPrice
        from apps.catalog.services import catalog_invalidate

        # Rate cards are part of the gateway's price book (the catalog cache).
        def changed(**_kwargs) -> None:
            catalog_invalidate()

        for model in (RateCard, RateCardPrice):
            name = model.__name__
            post_save.connect(changed, sender=model, weak=False, dispatch_uid=f"rc-save-{name}")
            post_delete.connect(changed, sender=model, weak=False, dispatch_uid=f"rc-del-{name}")
