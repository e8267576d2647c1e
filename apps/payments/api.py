"""Management API of payments (/api/v1/balance/…). Owners start top-ups and set
auto-recharge (an admin token acts as admin at most, so it cannot: 403); any member reads
the settings. Without Stripe configured, top-ups are a 404 that says so."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api.serializers import StrictSerializer
from apps.payments import selectors
from apps.payments.services import (
    PaymentsError,
    PaymentsOff,
    recharge_settings_set,
    top_up_start,
)
from apps.payments.stripe_api import PaymentError
from apps.tenants.access import OWNER, CanRead, IsOwner, TenantAccess, require_role
from apps.tenants.models import Tenant


class TopUpWriteSerializer(StrictSerializer):
    amount = serializers.DecimalField(max_digits=14, decimal_places=2)


class AutoRechargeSerializer(StrictSerializer):
    enabled = serializers.BooleanField()
    threshold = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0)
    amount = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0)
    window_s = serializers.IntegerField(required=False, default=3600)


def _settings_of(tenant: Tenant) -> dict:
    account = selectors.payment_account_get(tenant=tenant)
    return {
        "enabled": bool(account and account.recharge_enabled),
        "threshold": str(account.recharge_threshold if account else "0.00"),
        "amount": str(account.recharge_amount if account else "0.00"),
        "window_s": account.recharge_window_s if account else 3600,
        "paused": bool(account and account.recharge_paused_at),
        "paused_reason": account.recharge_paused_reason if account else "",
        "card": account.payment_method_label if account and account.payment_method_id else None,
        "payments_enabled": selectors.payments_enabled(),
    }


def _payments_errors(exc: Exception) -> exceptions.APIException:
    if isinstance(exc, PaymentsOff):
        return exceptions.NotFound(PaymentsOff.message)
    if isinstance(exc, PaymentsError):
        return exceptions.ValidationError({exc.field: [exc.message]})
    error = exceptions.APIException(f"Stripe refused: {exc}")
    error.status_code = status.HTTP_502_BAD_GATEWAY
    return error


@extend_schema_view(
    post=extend_schema(
        summary="Start a top-up (owners): a Stripe Checkout page to send the payer to",
        request=TopUpWriteSerializer,
        responses={
            201: inline_serializer(
                "TopUpStarted", {"id": serializers.IntegerField(), "url": serializers.URLField()}
            )
        },
        tags=["balance"],
    )
)
class TopUpView(APIView):
    permission_classes = [IsAuthenticated, IsOwner]
    access: TenantAccess

    def post(self, request: Request) -> Response:
        serializer = TopUpWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        back = request.build_absolute_uri(reverse("dashboard:balance"))
        try:
            top_up, url = top_up_start(
                tenant=self.access.tenant,
                amount=serializer.validated_data["amount"],
                success_url=back + "?top_up=paid",
                cancel_url=back + "?top_up=cancelled",
                email=getattr(self.access.user, "email", "") or "",
                actor=self.access.actor,
            )
        except (PaymentsOff, PaymentsError, PaymentError) as exc:
            raise _payments_errors(exc) from None
        return Response({"id": top_up.id, "url": url}, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        summary="Auto-recharge settings", responses=AutoRechargeSerializer, tags=["balance"]
    ),
    put=extend_schema(
        summary="Set auto-recharge (owners)",
        request=AutoRechargeSerializer,
        responses=AutoRechargeSerializer,
        tags=["balance"],
    ),
)
class AutoRechargeView(APIView):
    permission_classes = [IsAuthenticated, CanRead]
    access: TenantAccess

    def get(self, request: Request) -> Response:
        return Response(_settings_of(self.access.tenant))

    def put(self, request: Request) -> Response:
        require_role(self.access, OWNER)
        serializer = AutoRechargeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            recharge_settings_set(
                tenant=self.access.tenant,
                enabled=data["enabled"],
                threshold=data["threshold"],
                amount=data["amount"],
                window_s=data["window_s"],
                actor=self.access.actor,
            )
        except (PaymentsOff, PaymentsError) as exc:
            raise _payments_errors(exc) from None
        return Response(_settings_of(self.access.tenant))
