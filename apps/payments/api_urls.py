from django.urls import path

from apps.payments import api

urlpatterns = [
    path("v1/balance/top-ups", api.TopUpView.as_view(), name="api-balance-top-ups"),
    path(
        "v1/balance/auto-recharge", api.AutoRechargeView.as_view(), name="api-balance-auto-recharge"
    ),
]
