"""Usage: charts per day (by model, key, project, end user or a tag's value), spend against budgets, CSV export, statements.

A member narrowed to some projects sees those projects' usage (charts, spend, recent
requests, the CSV exports) and no statements (the tenant's bill as a whole: 403).

Figures come from apps.billing.selectors (daily rollups, statements); the CSV links are
the management API's own exports (/api/v1/usage/*.csv), which accept the session."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from apps.billing import selectors as billing
from apps.dashboard import selectors
from apps.dashboard.access import access_required
from apps.dashboard.forms import UsageRangeForm
from apps.dashboard.views.common import page
from apps.tenants.access import require_every_project

DEFAULT_DAYS = 14
SPLIT_LABELS = {
    "model": "Model",
    "key": "Key",
    "project": "Project",
    "user": "End user",
    "tag": "Tag value",
}


@login_required
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    access = access_required(request)
    today = timezone.now().astimezone(UTC).date()
    form = UsageRangeForm(request.GET or None)
    start, end, group, tag_key = today - timedelta(days=DEFAULT_DAYS - 1), today, "model", ""
    if form.is_bound and form.is_valid():
        start = form.cleaned_data["start"] or start
        end = form.cleaned_data["end"] or end
        group = form.cleaned_data["group"] or group
        tag_key = form.cleaned_data["tag"]
        if end < start:
            start = end
    # A member narrowed to some projects sees those projects' usage only.
    project_ids = access.report_project_ids()
    charts = selectors.usage_charts(
        tenant=access.tenant,
        start=start,
        end=end,
        group=group,
        tag_key=tag_key,
        project_ids=project_ids,
    )
    month_spend, budgets = selectors.budgets(tenant=access.tenant, project_ids=project_ids)
    start_ts = int(datetime.combine(start, time.min, tzinfo=UTC).timestamp())
    end_ts = int(datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC).timestamp())
    export = {"start_time": start_ts, "end_time": end_ts, "tenant": access.tenant.name}
    csv_links = {
        "records": reverse("usage-records-csv") + "?" + urlencode(export),
        "daily": reverse("usage-rollups-csv") + "?" + urlencode({**export, "granularity": "day"}),
        "hourly": reverse("usage-rollups-csv") + "?" + urlencode({**export, "granularity": "hour"}),
    }
    return page(
        request,
        "dashboard/usage.html",
        access,
        "usage",
        form=form if form.is_bound else UsageRangeForm(initial={"start": start, "end": end}),
        start=start,
        end=end,
        group=group,
        group_label=SPLIT_LABELS[group],
        tag_key=tag_key,
        charts=charts,
        chart_data=charts.as_json(),
        month_spend=month_spend,
        budgets=budgets,
        csv_links=csv_links,
        recent=selectors.recent_requests(tenant=access.tenant, project_ids=project_ids),
        sees_every_project=access.sees_every_project,
    )


@login_required
@require_GET
def statement_list(request: HttpRequest) -> HttpResponse:
    access = require_every_project(access_required(request))
    statements = billing.statement_list(tenant=access.tenant)
    return page(request, "dashboard/statements.html", access, "usage", statements=statements)


@login_required
@require_GET
def statement_detail(request: HttpRequest, statement_id: int) -> HttpResponse:
    access = require_every_project(access_required(request))
    statement = billing.statement_get(tenant=access.tenant, statement_id=statement_id)
    if statement is None:
        raise Http404("No such statement.")
    return page(
        request,
        "dashboard/statement_detail.html",
        access,
        "usage",
        statement=statement,
        lines=list(statement.lines.all()),
    )
