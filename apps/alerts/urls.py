from django.urls import path

from apps.alerts import views

urlpatterns = [
    path("v1/alerts/settings", views.AlertSettingsView.as_view(), name="api-alert-settings"),
    path("v1/alerts/events", views.AlertEventListView.as_view(), name="api-alert-events"),
    path("v1/webhooks", views.WebhookListView.as_view(), name="api-webhooks"),
    path("v1/webhooks/<int:endpoint_id>", views.WebhookDetailView.as_view(), name="api-webhook"),
    path(
        "v1/webhooks/<int:endpoint_id>/rotate-secret",
        views.WebhookRotateSecretView.as_view(),
        name="api-webhook-rotate-secret",
    ),
    path(
        "v1/webhooks/<int:endpoint_id>/test",
        views.WebhookTestView.as_view(),
        name="api-webhook-test",
    ),
    path(
        "v1/webhooks/<int:endpoint_id>/deliveries",
        views.WebhookDeliveryListView.as_view(),
        name="api-webhook-deliveries",
    ),
]
