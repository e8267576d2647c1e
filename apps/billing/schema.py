"""OpenAPI descriptions of the billing reports (apps/billing/views.py), for drf-spectacular.

The views build OpenAI-shaped JSON by hand (exact decimals); these serializers only
describe it."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers

TENANT = OpenApiParameter(
    "tenant", OpenApiTypes.STR, required=False, description="Staff: the tenant's name"
)
START = OpenApiParameter(
    "start_time", OpenApiTypes.INT, required=True, description="Unix seconds (inclusive)"
)
END = OpenApiParameter(
    "end_time", OpenApiTypes.INT, required=False, description="Unix seconds (exclusive); now"
)
LIMIT = OpenApiParameter("limit", OpenApiTypes.INT, required=False, description="Buckets")
PAGE = OpenApiParameter("page", OpenApiTypes.STR, required=False, description="next_page")
API_KEY_IDS = OpenApiParameter(
    "api_key_ids", OpenApiTypes.STR, required=False, description="Comma-separated key ids"
)
GROUP_BY = OpenApiParameter(
    "group_by",
    OpenApiTypes.STR,
    required=False,
    description="Comma list: project_id, user_id (the end user), api_key_id, model"
    " (costs: line_item), and tag:<key> (Tollgate: one group per value of that tag)",
)
PROJECT_IDS = OpenApiParameter(
    "project_ids", OpenApiTypes.STR, required=False, description="Comma-separated project ids"
)
USER_IDS = OpenApiParameter(
    "user_ids",
    OpenApiTypes.STR,
    required=False,
    many=True,
    description="End-user ids, one per value (user_ids[]=a&user_ids[]=b)",
)
TAGS = OpenApiParameter(
    "tags",
    OpenApiTypes.STR,
    required=False,
    description="Tollgate: key:value, comma-separated; one of the values of every key named",
)


class _UsageResult(serializers.Serializer):
    object = serializers.CharField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    input_cached_tokens = serializers.IntegerField()
    input_audio_tokens = serializers.IntegerField()
    output_audio_tokens = serializers.IntegerField()
    num_model_requests = serializers.IntegerField()
    project_id = serializers.CharField(allow_null=True)
    user_id = serializers.CharField(allow_null=True, help_text="The end user")
    api_key_id = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    batch = serializers.BooleanField(allow_null=True)
    tags = serializers.DictField(
        child=serializers.CharField(allow_null=True),
        allow_null=True,
        help_text="With group_by=tag:<key>: {key: value} (null value: untagged)",
    )


class _Amount(serializers.Serializer):
    value = serializers.DecimalField(
        max_digits=30, decimal_places=12, coerce_to_string=False, help_text="Exact USD"
    )
    currency = serializers.CharField()


class _CostResult(serializers.Serializer):
    object = serializers.CharField()
    amount = _Amount()
    line_item = serializers.CharField(allow_null=True, help_text="The model")
    project_id = serializers.CharField(allow_null=True)
    user_id = serializers.CharField(allow_null=True, help_text="The end user")
    api_key_id = serializers.CharField(required=False)
    tags = serializers.DictField(child=serializers.CharField(allow_null=True), allow_null=True)


def _page_of(result: type[serializers.Serializer], name: str) -> type[serializers.Serializer]:
    bucket = type(
        f"{name}Bucket",
        (serializers.Serializer,),
        {
            "object": serializers.CharField(),
            "start_time": serializers.IntegerField(),
            "end_time": serializers.IntegerField(),
            "results": result(many=True),
        },
    )
    return type(
        f"{name}Page",
        (serializers.Serializer,),
        {
            "object": serializers.CharField(),
            "data": bucket(many=True),
            "has_more": serializers.BooleanField(),
            "next_page": serializers.CharField(allow_null=True),
        },
    )


UsagePage = _page_of(_UsageResult, "Usage")
CostsPage = _page_of(_CostResult, "Costs")


class StatementLineSerializer(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField()
    model = serializers.CharField()
    usage_period = serializers.DateField()
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=30, decimal_places=12, coerce_to_string=False)


class StatementBalanceSerializer(serializers.Serializer):
    opening = serializers.DecimalField(max_digits=30, decimal_places=12, coerce_to_string=False)
    credits = serializers.DecimalField(
        max_digits=30,
        decimal_places=12,
        coerce_to_string=False,
        help_text="Grants, top-ups, refunds and adjustments in the month",
    )
    usage = serializers.DecimalField(
        max_digits=30,
        decimal_places=12,
        coerce_to_string=False,
        help_text="The month's prepaid usage (its price)",
    )
    closing = serializers.DecimalField(max_digits=30, decimal_places=12, coerce_to_string=False)


class StatementSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    object = serializers.CharField()
    tenant = serializers.CharField()
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    status = serializers.CharField()
    currency = serializers.CharField()
    total = serializers.DecimalField(max_digits=30, decimal_places=12, coerce_to_string=False)
    amount_due = serializers.DecimalField(max_digits=30, decimal_places=2, coerce_to_string=False)
    closed_at = serializers.DateTimeField(allow_null=True)
    refreshed_at = serializers.DateTimeField(allow_null=True)
    balance = StatementBalanceSerializer(
        allow_null=True, help_text="A tenant with a balance: the journal over the month"
    )


class StatementDetailSerializer(StatementSerializer):
    lines = StatementLineSerializer(many=True)


class StatementListSerializer(serializers.Serializer):
    object = serializers.CharField()
    data = StatementSerializer(many=True)


CSV = {(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, streamed")}

usage_schema = extend_schema(
    summary="Usage in OpenAI's organization usage shape",
    parameters=[
        TENANT,
        START,
        END,
        OpenApiParameter("bucket_width", OpenApiTypes.STR, enum=["1m", "1h", "1d"], required=False),
        GROUP_BY,
        API_KEY_IDS,
        PROJECT_IDS,
        USER_IDS,
        TAGS,
        OpenApiParameter("models", OpenApiTypes.STR, required=False),
        LIMIT,
        PAGE,
    ],
    responses=UsagePage,
    tags=["usage"],
)
costs_schema = extend_schema(
    summary="Costs in OpenAI's organization costs shape (exact amounts)",
    parameters=[
        TENANT,
        START,
        END,
        OpenApiParameter("bucket_width", OpenApiTypes.STR, enum=["1d", "1h"], required=False),
        GROUP_BY,
        API_KEY_IDS,
        PROJECT_IDS,
        USER_IDS,
        TAGS,
        OpenApiParameter("line_items", OpenApiTypes.STR, required=False),
        LIMIT,
        PAGE,
    ],
    responses=CostsPage,
    tags=["usage"],
)
records_csv_schema = extend_schema(
    summary="Raw ledger rows as CSV",
    parameters=[TENANT, START, END],
    responses=CSV,
    tags=["usage"],
)
rollups_csv_schema = extend_schema(
    summary="Hourly or daily rollups as CSV",
    parameters=[
        TENANT,
        START,
        END,
        OpenApiParameter("granularity", OpenApiTypes.STR, enum=["hour", "day"], required=False),
    ],
    responses=CSV,
    tags=["usage"],
)
statement_list_schema = extend_schema(
    summary="Monthly statements, newest first",
    parameters=[TENANT],
    responses=StatementListSerializer,
    tags=["statements"],
)
statement_detail_schema = extend_schema_view(
    get=extend_schema(
        summary="One statement with its lines",
        operation_id="statement_detail",
        parameters=[TENANT],
        responses=StatementDetailSerializer,
        tags=["statements"],
    )
)
