from django.db.models import Count, QuerySet

from apps.catalog.models import Backend, Deployment, Model, Price


def backend_list() -> QuerySet[Backend]:
    return Backend.objects.annotate(deployment_count=Count("deployments")).order_by("name")


def model_list() -> QuerySet[Model]:
    return Model.objects.order_by("name")


def deployment_list(*, model_name: str | None = None) -> QuerySet[Deployment]:
    deployments = Deployment.objects.select_related("model", "backend")
    if model_name:
        deployments = deployments.filter(model__name=model_name)
    return deployments.order_by("model__name", "-weight", "id")


def price_list(*, model_name: str | None = None) -> QuerySet[Price]:
    prices = Price.objects.select_related("model")
    if model_name:
        prices = prices.filter(model__name=model_name)
    return prices.order_by("model__name", "effective_from")


def model_name_taken(*, name: str, exclude_id: int | None = None) -> bool:
    """A model's name or alias already used by another model."""
    others = Model.objects.exclude(id=exclude_id) if exclude_id else Model.objects.all()
    if others.filter(name=name).exists():
        return True
    return any(name in (m.aliases or []) for m in others.only("aliases"))
