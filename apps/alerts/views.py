"""Management API for alerts and webhooks (/api/v1/alerts/…, /api/v1/webhooks/…). Thin:
tenant and role come from apps.tenants.access (viewers read, admins and owners write;
``allow_http`` / ``allow_internal`` are for staff), objects are read through the
tenant-scoped selectors (another tenant's id is a 404), writes go through the services."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.alerts import selectors, services
from apps.alerts import serializers as s
from apps.alerts.services import AlertsError
from apps.tenants.access import EveryProject, ReadOrWrite, TenantAccess
from apps.tenants.models import Tenant

TENANT_PARAM = OpenApiParameter(
    "tenant",
    OpenApiTypes.STR,
    description="Staff and members of several tenants: the tenant's name.",
    required=False,
)
NO_STORE = {"Cache-Control": "no-store"}


class AlertsAPIView(APIView):
    # Alerts and webhooks are the tenant's as a whole: not for a member narrowed to projects.
    permission_classes = [IsAuthenticated, ReadOrWrite, EveryProject]
    access: TenantAccess
    tenant: Tenant


def _fail(exc: AlertsError) -> exceptions.APIException:
    if exc.status == 403:
        return exceptions.PermissionDenied({exc.field: [exc.message]})
    return exceptions.ValidationError({exc.field: [exc.message]})


def _input(serializer_class, request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data, partial=True)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _settings_body(settings) -> dict[str, Any]:
    return s.AlertSettingsSerializer(settings).data


@extend_schema_view(
    get=extend_schema(
        summary="Alert thresholds",
        parameters=[TENANT_PARAM],
        responses=s.AlertSettingsSerializer,
        tags=["alerts"],
    ),
    patch=extend_schema(
        summary="Change alert thresholds",
        parameters=[TENANT_PARAM],
        request=s.AlertSettingsWriteSerializer,
        responses=s.AlertSettingsSerializer,
        tags=["alerts"],
    ),
)
class AlertSettingsView(AlertsAPIView):
    def get(self, request: Request) -> Response:
        return Response(_settings_body(selectors.alert_settings_get(tenant=self.tenant)))

    def patch(self, request: Request) -> Response:
        data = _input(s.AlertSettingsWriteSerializer, request)
        try:
            saved = services.alert_settings_set(tenant=self.tenant, actor=self.access, **data)
        except AlertsError as exc:
            raise _fail(exc) from None
        return Response(_settings_body(saved))


@extend_schema_view(
    get=extend_schema(
        summary="The latest alerts raised",
        parameters=[TENANT_PARAM],
        responses=s.AlertEventSerializer(many=True),
        tags=["alerts"],
    )
)
class AlertEventListView(AlertsAPIView):
    def get(self, request: Request) -> Response:
        found = selectors.alert_event_list(tenant=self.tenant)
        return Response(s.AlertEventSerializer(found, many=True).data)


@extend_schema_view(
    get=extend_schema(
        summary="Webhook endpoints",
        parameters=[TENANT_PARAM],
        responses=s.WebhookEndpointSerializer(many=True),
        tags=["webhooks"],
    ),
    post=extend_schema(
        summary="Register a webhook endpoint (its signing secret is in this response only)",
        parameters=[TENANT_PARAM],
        request=s.WebhookEndpointWriteSerializer,
        responses={201: s.WebhookEndpointWithSecretSerializer},
        tags=["webhooks"],
    ),
)
class WebhookListView(AlertsAPIView):
    def get(self, request: Request) -> Response:
        found = selectors.webhook_endpoint_list(tenant=self.tenant)
        return Response(s.WebhookEndpointSerializer(found, many=True).data)

    def post(self, request: Request) -> Response:
        data = _input(s.WebhookEndpointWriteSerializer, request)
        if "url" not in data:
            raise exceptions.ValidationError({"url": ["is required"]})
        try:
            endpoint, secret = services.webhook_endpoint_create(
                tenant=self.tenant, staff=self.access.is_staff, actor=self.access, **data
            )
        except AlertsError as exc:
            raise _fail(exc) from None
        body = s.WebhookEndpointWithSecretSerializer(endpoint, context={"secret": secret}).data
        return Response(body, status=status.HTTP_201_CREATED, headers=NO_STORE)


@extend_schema_view(
    get=extend_schema(
        summary="One webhook endpoint",
        parameters=[TENANT_PARAM],
        responses=s.WebhookEndpointSerializer,
        tags=["webhooks"],
    ),
    patch=extend_schema(
        summary="Change a webhook endpoint",
        parameters=[TENANT_PARAM],
        request=s.WebhookEndpointWriteSerializer,
        responses=s.WebhookEndpointSerializer,
        tags=["webhooks"],
    ),
    delete=extend_schema(
        summary="Remove a webhook endpoint (and its delivery log)",
        parameters=[TENANT_PARAM],
        responses={204: None},
        tags=["webhooks"],
    ),
)
class WebhookDetailView(AlertsAPIView):
    def get(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(tenant=self.tenant, endpoint_id=endpoint_id)
        return Response(s.WebhookEndpointSerializer(endpoint).data)

    def patch(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(tenant=self.tenant, endpoint_id=endpoint_id)
        data = _input(s.WebhookEndpointWriteSerializer, request)
        try:
            services.webhook_endpoint_update(
                endpoint=endpoint, staff=self.access.is_staff, actor=self.access, **data
            )
        except AlertsError as exc:
            raise _fail(exc) from None
        return Response(s.WebhookEndpointSerializer(endpoint).data)

    def delete(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(tenant=self.tenant, endpoint_id=endpoint_id)
        services.webhook_endpoint_delete(endpoint=endpoint, actor=self.access)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    post=extend_schema(
        summary="Replace the signing secret (the new one is in this response only)",
        parameters=[TENANT_PARAM],
        request=None,
        responses=s.WebhookSecretSerializer,
        tags=["webhooks"],
    )
)
class WebhookRotateSecretView(AlertsAPIView):
    def post(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(tenant=self.tenant, endpoint_id=endpoint_id)
        secret = services.webhook_endpoint_secret_rotate(endpoint=endpoint, actor=self.access)
        return Response({"secret": secret}, headers=NO_STORE)


@extend_schema_view(
    post=extend_schema(
        summary="Send a test event to this endpoint",
        parameters=[TENANT_PARAM],
        request=None,
        responses={202: s.WebhookDeliverySerializer},
        tags=["webhooks"],
    )
)
class WebhookTestView(AlertsAPIView):
    def post(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(tenant=self.tenant, endpoint_id=endpoint_id)
        delivery = services.webhook_test_send(endpoint=endpoint, actor=self.access)
        return Response(s.WebhookDeliverySerializer(delivery).data, status=202)


@extend_schema_view(
    get=extend_schema(
        summary="The endpoint's delivery log (latest 50, each with its attempts)",
        parameters=[TENANT_PARAM],
        responses=s.WebhookDeliverySerializer(many=True),
        tags=["webhooks"],
    )
)
class WebhookDeliveryListView(AlertsAPIView):
    def get(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get(tenant=self.tenant, endpoint_id=endpoint_id)
        log = selectors.webhook_delivery_log(endpoint=endpoint)
        return Response(s.WebhookDeliverySerializer(log, many=True).data)
