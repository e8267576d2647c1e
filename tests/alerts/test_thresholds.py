"""Budget and balance thresholds: each fires once per (scope, threshold, period), under
concurrent evaluation and across restarts; the next period re-arms; a balance threshold
re-arms when the balance is back above it. Each alert is one webhook delivery and one
email to the tenant's owners and admins."""

import json
import subprocess
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection

from apps.alerts.delivery import deliveries_due_send, emails_due_send
from apps.alerts.evaluation import alerts_evaluate
from apps.alerts.models import AlertEvent, AlertFired, WebhookDelivery
from apps.alerts.services import alert_send, alert_settings_set
from apps.keys.services import api_key_issue
from apps.wallet.services import balance_entry_add
from tests.alerts.conftest import endpoint_make, spend, tenant_make
from tests.conftest import PYTHON, ROOT

JUNE = datetime(2026, 6, 15, 12, tzinfo=UTC)
JULY = datetime(2026, 7, 3, 12, tzinfo=UTC)


def fired(tenant) -> list[tuple[str, str, str]]:
    return sorted(
        AlertFired.objects.filter(tenant=tenant).values_list("scope", "threshold", "period_id")
    )


def percents_received(receiver) -> list[int]:
    return sorted(json.loads(r.body)["data"]["threshold_percent"] for r in receiver.requests)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_crossing_80_under_load_sends_one_webhook_and_one_email_per_threshold(receiver):
    acme = tenant_make("acme", budget_amount=Decimal("10.00"), budget_period="monthly")
    endpoint_make(acme, receiver.url)
    key = api_key_issue(tenant=acme, name="main")[0]
    stop = threading.Event()
    errors: list[BaseException] = []

    def evaluate_and_deliver() -> None:
        try:
            while not stop.is_set():
                alerts_evaluate()
                deliveries_due_send()
                emails_due_send()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=evaluate_and_deliver) for _ in range(6)]
    for worker in workers:
        worker.start()
    # 85 requests of 0.10 each land while six evaluators race: 50 % and 80 % are crossed.
    for _ in range(85):
        spend(acme, "0.10", key=key)
    stop.set()
    for worker in workers:
        worker.join()
    alerts_evaluate()
    deliveries_due_send()
    emails_due_send()
    assert errors == []
    assert percents_received(receiver) == [50, 80]
    assert len(mail.outbox) == 2
    assert sorted(m.subject for m in mail.outbox) == [
        "[Tollgate] acme: 50% of the tenant budget used",
        "[Tollgate] acme: 80% of the tenant budget used",
    ]


@pytest.mark.django_db
def test_each_alert_emails_the_owners_and_admins_only(receiver):
    acme = tenant_make("acme", budget_amount=Decimal("1.00"))
    alert_settings_set(tenant=acme, budget_percents=[50])
    spend(acme, "0.60")
    alerts_evaluate()
    emails_due_send()
    roles = {m.user.email: m.role for m in acme.memberships.select_related("user")}
    assert sorted(roles[address] for address in mail.outbox[0].to) == ["admin", "owner"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_restarted_process_does_not_resend(receiver, server_env):
    acme = tenant_make("acme", budget_amount=Decimal("1.00"))
    endpoint_make(acme, receiver.url)
    spend(acme, "0.90")
    assert alerts_evaluate() == 2  # 50 and 80
    deliveries_due_send()
    emails_due_send()
    code = (
        "import django; django.setup();"
        "from apps.alerts.evaluation import alerts_evaluate;"
        "from apps.alerts.delivery import deliveries_due_send, emails_due_send;"
        "print(alerts_evaluate(), deliveries_due_send(), emails_due_send())"
    )
    result = subprocess.run(
        [PYTHON, "-c", code], cwd=ROOT, env=server_env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "0", "0"]
    assert len(receiver.requests) == 2


@pytest.mark.django_db
def test_the_next_budget_period_re_arms(receiver):
    acme = tenant_make("acme", budget_amount=Decimal("1.00"))
    alert_settings_set(tenant=acme, budget_percents=[80])
    spend(acme, "0.85", at=JUNE)
    alerts_evaluate(now=JUNE)
    alerts_evaluate(now=JUNE)
    spend(acme, "0.85", at=JULY)
    alerts_evaluate(now=JULY)
    assert fired(acme) == [("tenant", "80", "m202606"), ("tenant", "80", "m202607")]


@pytest.mark.django_db
def test_a_daily_budget_re_arms_the_next_day(receiver):
    acme = tenant_make("acme", budget_amount=Decimal("1.00"), budget_period="daily")
    alert_settings_set(tenant=acme, budget_percents=[100])
    spend(acme, "1.00", at=JUNE)
    spend(acme, "1.00", at=JUNE.replace(day=16))
    alerts_evaluate(now=JUNE)
    alerts_evaluate(now=JUNE.replace(day=16))
    assert [p for _s, _t, p in fired(acme)] == ["d20260615", "d20260616"]


@pytest.mark.django_db
def test_a_key_budget_alerts_with_its_key_and_no_other_tenant_hears_it(receiver):
    acme = tenant_make("acme")
    globex = tenant_make("globex")
    endpoint_make(acme, receiver.url)
    endpoint_make(globex, receiver.url + "?globex")
    key = api_key_issue(tenant=acme, name="batch", budget_amount=Decimal("2.00"))[0]
    spend(acme, "1.00", key=key)
    alerts_evaluate()
    deliveries_due_send()
    body = json.loads(receiver.requests[0].body)
    assert len(receiver.requests) == 1
    assert receiver.requests[0].path == "/hook"
    assert body["tenant"] == "acme"
    assert body["data"]["key"] == {"id": key.id, "name": "batch", "prefix": key.prefix}
    assert body["data"]["scope"] == "key"


@pytest.mark.django_db
def test_thresholds_are_the_tenants_own(receiver):
    acme = tenant_make("acme", budget_amount=Decimal("1.00"))
    alert_settings_set(tenant=acme, budget_percents=[25, 75])
    spend(acme, "0.80")
    alerts_evaluate()
    assert [t for _s, t, _p in fired(acme)] == ["25", "75"]


@pytest.mark.django_db
def test_a_balance_alert_fires_once_and_re_arms_after_a_top_up(receiver):
    acme = tenant_make("acme", billing_mode="prepaid")
    endpoint_make(acme, receiver.url)
    alert_settings_set(tenant=acme, balance_below=["5.00"])
    balance_entry_add(tenant=acme, kind="grant", amount=Decimal("10"), ref="welcome")
    spend(acme, "6.00", prepaid=True)  # balance 4
    alerts_evaluate()
    alerts_evaluate()
    balance_entry_add(tenant=acme, kind="topup", amount=Decimal("10"), ref="pay-1")  # 14
    alerts_evaluate()
    spend(acme, "10.00", prepaid=True)  # 4 again
    alerts_evaluate()
    deliveries_due_send()
    bodies = [json.loads(r.body)["data"] for r in receiver.requests]
    assert [p for _s, _t, p in fired(acme)] == ["e0", "e1"]
    assert bodies == [
        {"threshold": "5", "balance": "4", "currency": "USD"},
        {"threshold": "5", "balance": "4", "currency": "USD"},
    ]


@pytest.mark.django_db
def test_alert_send_raises_once_per_dedupe_key(receiver):
    acme = tenant_make("acme", billing_mode="prepaid")
    endpoint_make(acme, receiver.url, event_types=["balance.auto_recharge_failed"])
    first = alert_send(
        tenant=acme,
        event_type="balance.auto_recharge_failed",
        data={"amount": "20.00", "reason": "card_declined"},
        dedupe_key="recharge:2026-06-15T12",
    )
    second = alert_send(
        tenant=acme,
        event_type="balance.auto_recharge_failed",
        data={"amount": "20.00", "reason": "card_declined"},
        dedupe_key="recharge:2026-06-15T12",
    )
    assert (first, second) == (True, False)
    assert WebhookDelivery.objects.filter(tenant=acme).count() == 1
    assert AlertEvent.objects.get(tenant=acme).email_status == "pending"


@pytest.mark.django_db
def test_an_endpoint_receives_only_the_types_it_subscribed_to(receiver):
    acme = tenant_make("acme", budget_amount=Decimal("1.00"))
    endpoint_make(acme, receiver.url, event_types=["balance.below_threshold"])
    spend(acme, "1.00")
    alerts_evaluate()
    assert WebhookDelivery.objects.filter(tenant=acme).count() == 0
