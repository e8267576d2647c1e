from django.urls import path

from apps.billing import views

urlpatterns = [
    path(
        "v1/organization/usage/completions",
        views.UsageCompletionsView.as_view(),
        name="usage-completions",
    ),
    path("v1/organization/costs", views.CostsView.as_view(), name="costs"),
    path("v1/usage/records.csv", views.UsageRecordsCSVView.as_view(), name="usage-records-csv"),
    path("v1/usage/rollups.csv", views.UsageRollupsCSVView.as_view(), name="usage-rollups-csv"),
    path("v1/statements", views.StatementListView.as_view(), name="statements"),
    path(
        "v1/statements/<int:statement_id>",
        views.StatementDetailView.as_view(),
        name="statement-detail",
    ),
]
