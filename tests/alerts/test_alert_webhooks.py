"""Webhook endpoints: registration (https, SSRF guard, staff-only exceptions, the secret
shown once), delivery (Stripe-style signature, retries with backoff, the attempt log, no
redirects, pinned addresses) and the test event."""

import json
import socket
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.alerts.delivery import deliveries_due_send, retry_delay, webhook_delivery_attempt
from apps.alerts.models import WebhookDelivery, WebhookEndpoint
from apps.alerts.services import alert_send, webhook_test_send
from apps.alerts.signing import signature_verify
from apps.tenants.models import Membership
from tests.alerts.conftest import endpoint_make, tenant_make

pytestmark = pytest.mark.django_db


def user_of(tenant, role: str):
    return Membership.objects.filter(tenant=tenant, role=role).first().user


def api(tenant, role: str = "owner") -> APIClient:
    client = APIClient()
    client.force_authenticate(user_of(tenant, role))
    return client


@pytest.fixture
def acme():
    return tenant_make("acme")


@pytest.fixture
def resolver(monkeypatch):
    """Names the tests resolve themselves (the DNS is not ours): {host: [ip, …]}; every
    other name resolves as usual. ``lookups`` counts the lookups of those names."""
    names: dict[str, list[str]] = {}
    lookups: dict[str, int] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            lookups[host] = lookups.get(host, 0) + 1
            family = {4: socket.AF_INET, 6: socket.AF_INET6}
            return [
                (family[6 if ":" in ip else 4], socket.SOCK_STREAM, 6, "", (ip, port or 0))
                for ip in names[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    names["lookups"] = lookups  # type: ignore[assignment]
    return names


def register(client: APIClient, url: str, **extra):
    return client.post("/api/v1/webhooks", {"url": url, **extra}, format="json")


# Registration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://10.255.1.2:8443/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://[::ffff:10.1.1.1]/hook",
        "https://169.254.169.254/latest",
        "https://100.64.0.7/hook",
        "https://192.168.1.1/hook",
        "https://[fd12::1]/hook",
        "https://0.0.0.0/hook",
    ],
)
def test_an_internal_address_is_refused_at_registration(acme, url):
    response = register(api(acme), url)
    assert response.status_code == 400
    assert list(response.json()) == ["url"]


def test_a_hostname_resolving_to_10_8_is_refused(acme, resolver):
    resolver["hooks.corp.example"] = ["93.184.216.34", "10.20.30.40"]
    response = register(api(acme), "https://hooks.corp.example/alerts")
    assert response.json() == {
        "url": ["hooks.corp.example resolves to 10.20.30.40, refused (private address)"]
    }


def test_plain_http_is_refused_without_staff_approval(acme):
    response = register(api(acme), "http://93.184.216.34/hook")
    assert response.json()["url"] == ["must be an https:// URL (plain http needs staff approval)"]


def test_only_staff_allow_internal_addresses(acme):
    response = register(api(acme), "https://10.0.0.1/hook", allow_internal=True)
    assert response.status_code == 403


def test_staff_may_allow_an_internal_endpoint(acme):
    from django.contrib.auth import get_user_model

    staff = APIClient()
    staff.force_authenticate(get_user_model().objects.create_user("sam", is_staff=True))
    response = staff.post(
        "/api/v1/webhooks?tenant=acme",
        {"url": "https://10.0.0.1/hook", "allow_internal": True},
        format="json",
    )
    assert response.status_code == 201


def test_a_new_url_from_a_non_staff_member_loses_the_staff_exceptions(acme, receiver):
    endpoint, _ = endpoint_make(acme, receiver.url)
    response = api(acme, "admin").patch(
        f"/api/v1/webhooks/{endpoint.id}", {"url": "https://10.9.9.9/metadata"}, format="json"
    )
    assert response.json() == {"url": ["10.9.9.9 is refused (private address)"]}


def test_the_secret_is_shown_once_and_stored_encrypted(acme):
    created = register(api(acme), "https://93.184.216.34/hook").json()
    listed = api(acme, "viewer").get(f"/api/v1/webhooks/{created['id']}").json()
    stored = WebhookEndpoint.objects.get(id=created["id"]).secret_encrypted
    assert created["secret"].startswith("whsec_")
    assert "secret" not in listed
    assert created["secret"] not in stored


def test_viewers_read_but_do_not_register(acme):
    response = register(api(acme, "viewer"), "https://93.184.216.34/hook")
    assert response.status_code == 403


def test_unknown_event_types_are_a_400_naming_the_field(acme):
    response = register(api(acme), "https://93.184.216.34/hook", event_types=["nope"])
    assert list(response.json()) == ["event_types"]


# Delivery ------------------------------------------------------------------------------


def test_the_signature_verifies_with_the_documented_scheme(acme, receiver):
    endpoint, secret = endpoint_make(acme, receiver.url)
    alert_send(tenant=acme, event_type="webhook.test", data={"n": 1}, dedupe_key="sig")
    deliveries_due_send()
    request = receiver.requests[0]
    assert signature_verify(
        secret, request.headers["Tollgate-Signature"], request.body, now=int(time.time())
    )


def test_stripes_own_library_verifies_the_signature(acme, receiver):
    stripe = pytest.importorskip("stripe")
    endpoint, secret = endpoint_make(acme, receiver.url)
    alert_send(tenant=acme, event_type="webhook.test", data={"n": 1}, dedupe_key="sig")
    deliveries_due_send()
    request = receiver.requests[0]
    header = request.headers["Tollgate-Signature"]
    assert stripe.WebhookSignature.verify_header(request.body.decode(), header, secret, 300)


def test_a_wrong_secret_does_not_verify(acme, receiver):
    endpoint_make(acme, receiver.url)
    alert_send(tenant=acme, event_type="webhook.test", data={}, dedupe_key="sig")
    deliveries_due_send()
    request = receiver.requests[0]
    assert not signature_verify(
        "whsec_other", request.headers["Tollgate-Signature"], request.body, now=int(time.time())
    )


def test_the_body_is_the_documented_envelope(acme, receiver):
    endpoint_make(acme, receiver.url)
    alert_send(tenant=acme, event_type="webhook.test", data={"n": 1}, dedupe_key="env")
    deliveries_due_send()
    body = json.loads(receiver.requests[0].body)
    assert sorted(body) == ["created", "data", "id", "tenant", "type"]
    assert (body["type"], body["tenant"], body["data"]) == ("webhook.test", "acme", {"n": 1})


def test_a_failing_endpoint_is_retried_with_backoff_and_every_attempt_logged(acme, receiver):
    endpoint, _ = endpoint_make(acme, receiver.url)
    receiver.statuses = [500]
    delivery = webhook_test_send(endpoint=endpoint)
    start = timezone.now()
    first = webhook_delivery_attempt(delivery_id=delivery.id, now=start)
    delivery.refresh_from_db()
    wait = delivery.next_attempt_at - start
    not_yet = deliveries_due_send(now=start + timedelta(seconds=20))
    second = webhook_delivery_attempt(delivery_id=delivery.id, now=delivery.next_attempt_at)
    delivery.refresh_from_db()
    assert timedelta(seconds=24) <= wait <= timedelta(seconds=36)
    assert not_yet == 0
    assert [first.status_code, second.status_code] == [500, 200]
    assert delivery.status == "succeeded"
    assert len(receiver.requests) == 2
    page = dashboard(acme, "viewer").get(f"/dashboard/webhooks/{endpoint.id}/")
    assert b"#1 " in page.content
    assert b"HTTP 500" in page.content
    assert b"HTTP 200" in page.content


def test_the_delivery_log_api_lists_each_attempt(acme, receiver):
    endpoint, _ = endpoint_make(acme, receiver.url)
    receiver.statuses = [503, 500]
    delivery = webhook_test_send(endpoint=endpoint)
    now = timezone.now()
    for _ in range(3):
        webhook_delivery_attempt(delivery_id=delivery.id, now=now)
        now = WebhookDelivery.objects.get(id=delivery.id).next_attempt_at
    log = api(acme, "viewer").get(f"/api/v1/webhooks/{endpoint.id}/deliveries").json()
    assert [a["status_code"] for a in log[0]["attempts_log"]] == [503, 500, 200]


def test_retries_back_off_exponentially_and_give_up_after_24_hours(acme, receiver):
    endpoint, _ = endpoint_make(acme, receiver.url)
    receiver.statuses = [500] * 100
    delivery = webhook_test_send(endpoint=endpoint)
    now = delivery.created_at
    waits = []
    while True:
        webhook_delivery_attempt(delivery_id=delivery.id, now=now)
        delivery.refresh_from_db()
        if delivery.status != "pending":
            break
        waits.append(delivery.next_attempt_at - now)
        now = delivery.next_attempt_at
    assert delivery.status == "failed"
    assert now - delivery.created_at <= timedelta(hours=24)
    assert waits[3] > waits[0] * 4  # 30 s, 60 s, 2 min, 4 min … (± 20 % jitter)
    assert max(waits) <= timedelta(hours=1.2)
    assert delivery.attempts == len(receiver.requests)


def test_the_backoff_has_jitter():
    import random

    rng = random.Random(7)
    assert len({retry_delay(3, rng) for _ in range(5)}) == 5


def test_two_workers_never_send_the_same_attempt(acme, receiver):
    endpoint, _ = endpoint_make(acme, receiver.url)
    delivery = webhook_test_send(endpoint=endpoint)
    now = timezone.now()
    webhook_delivery_attempt(delivery_id=delivery.id, now=now)
    again = webhook_delivery_attempt(delivery_id=delivery.id, now=now)
    assert again is None
    assert len(receiver.requests) == 1


def test_redirects_are_not_followed(acme, receiver):
    endpoint, _ = endpoint_make(acme, receiver.url)
    receiver.statuses = [302]
    receiver.redirect_to = receiver.url.replace("/hook", "/elsewhere")
    delivery = webhook_test_send(endpoint=endpoint)
    attempt = webhook_delivery_attempt(delivery_id=delivery.id)
    assert (attempt.status_code, attempt.error) == (302, "redirect not followed")
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_an_internal_endpoint_is_refused_at_send_time_unless_allowed(acme, receiver):
    endpoint, _ = endpoint_make(acme, receiver.url)
    WebhookEndpoint.objects.filter(id=endpoint.id).update(allow_internal=False)
    delivery = webhook_test_send(endpoint=endpoint)
    attempt = webhook_delivery_attempt(delivery_id=delivery.id)
    assert attempt.error == "refused: 127.0.0.1 is refused (loopback address)"
    assert receiver.requests == []


def test_dns_rebinding_to_loopback_is_refused_at_send_time(acme, receiver, resolver):
    resolver["hooks.acme.example"] = ["93.184.216.34"]
    port = receiver.url.split(":")[2].split("/")[0]
    endpoint, _ = endpoint_make(
        acme, f"http://hooks.acme.example:{port}/hook", allow_internal=False
    )
    resolver["hooks.acme.example"] = ["127.0.0.1"]  # the name now points inside
    delivery = webhook_test_send(endpoint=endpoint)
    attempt = webhook_delivery_attempt(delivery_id=delivery.id)
    assert attempt.error == (
        "refused: hooks.acme.example resolves to 127.0.0.1, refused (loopback address)"
    )
    assert receiver.requests == []


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(acme, receiver, resolver):
    resolver["hooks.acme.example"] = ["127.0.0.1"]
    port = receiver.url.split(":")[2].split("/")[0]
    endpoint, _ = endpoint_make(acme, f"http://hooks.acme.example:{port}/hook")
    resolver["lookups"].clear()
    delivery = webhook_test_send(endpoint=endpoint)
    webhook_delivery_attempt(delivery_id=delivery.id)
    assert receiver.requests[0].headers["Host"] == f"hooks.acme.example:{port}"
    assert resolver["lookups"] == {"hooks.acme.example": 1}  # checked once, never re-resolved


def test_a_disabled_endpoint_gets_no_alerts(acme, receiver):
    endpoint_make(acme, receiver.url, enabled=False)
    alert_send(tenant=acme, event_type="balance.below_threshold", data={}, dedupe_key="x")
    assert WebhookDelivery.objects.filter(tenant=acme).count() == 0


def test_an_unreachable_endpoint_logs_the_error(acme, receiver):
    from tests.conftest import free_port

    endpoint, _ = endpoint_make(acme, f"http://127.0.0.1:{free_port()}/hook")
    attempt = webhook_delivery_attempt(delivery_id=webhook_test_send(endpoint=endpoint).id)
    assert attempt.status_code is None
    assert attempt.error.startswith("ConnectError")


# The test event, dashboard and API -----------------------------------------------------


def dashboard(tenant, role: str) -> Client:
    client = Client()
    client.force_login(user_of(tenant, role))
    return client


def test_the_send_test_event_button_delivers_a_test_event(acme, receiver):
    endpoint, _ = endpoint_make(acme, receiver.url, event_types=["budget.threshold_reached"])
    response = dashboard(acme, "admin").post(f"/dashboard/webhooks/{endpoint.id}/test/")
    deliveries_due_send()
    assert response.status_code == 302
    assert json.loads(receiver.requests[0].body)["type"] == "webhook.test"


def test_a_viewer_has_no_test_button_and_cannot_post_it(acme, receiver):
    endpoint, _ = endpoint_make(acme, receiver.url)
    client = dashboard(acme, "viewer")
    page = client.get(f"/dashboard/webhooks/{endpoint.id}/")
    assert b'data-testid="send-test"' not in page.content
    assert client.post(f"/dashboard/webhooks/{endpoint.id}/test/").status_code == 403


def test_the_api_test_event_is_queued_for_the_endpoint(acme, receiver):
    endpoint, _ = endpoint_make(acme, receiver.url)
    response = api(acme, "admin").post(f"/api/v1/webhooks/{endpoint.id}/test")
    deliveries_due_send()
    assert response.status_code == 202
    assert len(receiver.requests) == 1


def test_registering_on_the_dashboard_shows_the_secret_once(acme, resolver):
    client = dashboard(acme, "owner")
    response = client.post(
        "/dashboard/webhooks/", {"url": "https://93.184.216.34/h", "enabled": "on"}, follow=True
    )
    again = client.get(response.redirect_chain[-1][0])
    assert b"whsec_" in response.content.split(b'id="one-time-value"')[1][:200]
    assert b'id="one-time-value"' not in again.content


def test_the_dashboard_refusal_names_the_field(acme):
    response = dashboard(acme, "owner").post(
        "/dashboard/webhooks/", {"url": "https://10.0.0.1/h", "enabled": "on"}
    )
    assert response.status_code == 400
    assert b"url: 10.0.0.1 is refused (private address)" in response.content


def test_client_text_is_escaped_on_the_dashboard(acme, receiver):
    endpoint_make(acme, receiver.url, description="<script>alert(1)</script>")
    page = dashboard(acme, "viewer").get("/dashboard/webhooks/")
    assert b"<script>alert(1)" not in page.content
    assert b"&lt;script&gt;alert(1)" in page.content


def test_alert_settings_are_set_by_admins_and_read_by_viewers(acme):
    response = api(acme, "admin").patch(
        "/api/v1/alerts/settings", {"budget_percents": [90, 50]}, format="json"
    )
    read = api(acme, "viewer").get("/api/v1/alerts/settings").json()
    assert response.status_code == 200
    assert read["budget_percents"] == [50, 90]


def test_bad_alert_settings_are_a_400_naming_the_field(acme):
    response = api(acme, "admin").patch(
        "/api/v1/alerts/settings", {"balance_below": ["-1"]}, format="json"
    )
    assert list(response.json()) == ["balance_below"]


def test_the_dashboard_saves_alert_settings(acme):
    client = dashboard(acme, "owner")
    client.post("/dashboard/alerts/", {"budget_percents": "60, 90", "email_enabled": "on"})
    page = client.get("/dashboard/alerts/")
    assert b'value="60, 90"' in page.content
