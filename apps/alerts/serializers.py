"""Shapes of the alerts API. Input is validated by the services (errors name the field);
these serializers only describe and render."""

from rest_framework import serializers

from apps.alerts import events
from apps.alerts.models import AlertEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint


class AlertSettingsSerializer(serializers.Serializer):
    budget_percents = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=100),
        help_text="Percent of each budget (the tenant's and each key's) that alerts, once "
        "per budget period",
    )
    balance_below = serializers.ListField(
        child=serializers.CharField(),
        help_text='Prepaid balance thresholds as decimal strings ("5.00"): alert once when '
        "the balance falls below; re-armed when it is back above",
    )
    email_enabled = serializers.BooleanField(help_text="Email owners and admins on each alert")


class AlertSettingsWriteSerializer(serializers.Serializer):
    budget_percents = serializers.JSONField(required=False)
    balance_below = serializers.JSONField(required=False)
    email_enabled = serializers.BooleanField(required=False)


class AlertEventSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)

    class Meta:
        model = AlertEvent
        fields = ["id", "type", "created_at", "data", "email_status"]
        read_only_fields = fields


class WebhookEndpointSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(
        child=serializers.CharField(),
        help_text='Event types it receives; ["*"] = every type. Known: '
        + ", ".join(sorted(events.EVENT_TYPES)),
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "enabled",
            "event_types",
            "secret_prefix",
            "allow_http",
            "allow_internal",
            "created_at",
        ]
        read_only_fields = fields


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.SerializerMethodField(
        help_text="The signing secret, shown once (Tollgate-Signature: see docs/alerts.md)"
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields

    def get_secret(self, obj: WebhookEndpoint) -> str:
        return self.context["secret"]


class WebhookEndpointWriteSerializer(serializers.Serializer):
    url = serializers.CharField(required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)
    event_types = serializers.JSONField(required=False)
    allow_http = serializers.BooleanField(required=False, help_text="Staff only")
    allow_internal = serializers.BooleanField(required=False, help_text="Staff only")


class WebhookSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(read_only=True)


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "started_at", "duration_ms", "status_code", "error"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.CharField(source="event.public_id", read_only=True)
    event_type = serializers.CharField(source="event.type", read_only=True)
    attempts_log = WebhookAttemptSerializer(source="log", many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "last_status_code",
            "next_attempt_at",
            "created_at",
            "completed_at",
            "attempts_log",
        ]
        read_only_fields = fields
