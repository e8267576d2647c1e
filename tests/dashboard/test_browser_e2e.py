"""The dashboard in a real browser (Debian's headless Chromium, driven by Playwright)
against the whole platform served by uvicorn: sign in, issue a key and see its secret
once, call /v1 with it through the openai SDK, see the request on the usage page, revoke
it and see the SDK refused; a viewer cannot issue keys. Screenshots go to test-artifacts/.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from apps.billing.services import rollup_sync
from apps.keys.models import ApiKey
from apps.ledger.models import UsageRecord
from apps.tenants.models import Membership, Tenant
from tests.conftest import ROOT, wait_until
from tests.dashboard.conftest import PASSWORD, make_user

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser(server_env) -> Iterator[object]:
    """Chromium for the module. Playwright's sync API keeps an asyncio loop on this thread,
    which makes Django refuse ORM calls from the test; the test's own ORM calls are plain
    synchronous code, so they are allowed while the browser lives (the servers, started
    from ``server_env`` before this, keep the check)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()


def sign_in(browser, gateway: str, username: str):
    context = browser.new_context(base_url=gateway, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    # Every page and resource the browser loads must load (a CSP refusal or a missing
    # static file shows up here); page.request calls are not recorded.
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto("/dashboard/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/keys/")
    return context, page, errors


def test_owner_issues_uses_and_revokes_a_key_viewer_cannot(
    browser, transactional_db, seed, gateway, celery_worker
):
    from playwright.sync_api import expect

    tenant = Tenant.objects.get(name=seed.tenant_name)
    make_user("owen", tenant=tenant, role=Membership.Role.OWNER)
    make_user("vicky", tenant=tenant, role=Membership.Role.VIEWER)
    ARTIFACTS.mkdir(exist_ok=True)

    context, page, errors = sign_in(browser, gateway, "owen")
    # The stylesheet and the chart library come from the server itself (WhiteNoise).
    css = page.request.get("/static/dashboard/dashboard.css")
    assert css.ok and "text/css" in css.headers["content-type"]

    # Issue a key: the secret is shown once.
    page.get_by_test_id("new-key").click()
    page.fill("#id_name", "browser-key")
    page.get_by_label("test-model", exact=True).check()
    page.fill("#id_rpm", "100")
    page.fill("#id_budget_amount", "5")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url("**/dashboard/keys/")
    panel = page.get_by_test_id("one-time-secret")
    expect(panel).to_be_visible()
    secret = page.locator("#one-time-value").input_value()
    assert secret.startswith("tg-")
    api_key = ApiKey.objects.get(tenant=tenant, name="browser-key", revoked_at__isnull=True)
    expect(page.locator(f'tr[data-key-prefix="{api_key.prefix}"]')).to_contain_text("active")
    page.screenshot(path=str(ARTIFACTS / "dashboard-keys.png"), full_page=True)
    page.reload()
    expect(page.get_by_test_id("one-time-secret")).to_have_count(0)
    assert secret not in page.content()

    # Call the API with it through the official SDK, against the same server.
    client = openai.OpenAI(base_url=gateway + "/v1", api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="test-model", messages=[{"role": "user", "content": "hello from the browser test"}]
    )
    request_id = raw.headers["x-request-id"]
    completion = raw.parse()
    assert completion.choices[0].message.content

    # The worker ingests it; the rollup (each minute on the beat) is run here directly.
    wait_until(lambda: UsageRecord.objects.filter(request_id=request_id).exists(), timeout=30)
    rollup_sync()
    page.goto("/dashboard/usage/?group=key")
    expect(page.get_by_test_id("recent-requests")).to_contain_text(request_id)
    totals = page.get_by_test_id("usage-totals")
    expect(totals).to_contain_text("browser-key")
    expect(page.get_by_test_id("month-spend")).not_to_have_text("$0.00")
    page.goto("/dashboard/usage/")
    expect(page.get_by_test_id("usage-totals")).to_contain_text("test-model")
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('chart-requests'))"
    )
    page.screenshot(path=str(ARTIFACTS / "dashboard-usage.png"), full_page=True)
    csv = page.request.get(page.get_by_test_id("csv-records").get_attribute("href"))
    assert csv.ok and request_id in csv.text()

    # Revoke it: the SDK is refused (every gateway process within a second).
    page.goto("/dashboard/keys/")
    page.locator(f'tr[data-key-prefix="{api_key.prefix}"]').get_by_role(
        "link", name="Revoke"
    ).click()
    page.get_by_test_id("confirm-revoke").click()
    page.wait_for_url("**/dashboard/keys/")
    expect(page.locator(f'tr[data-key-prefix="{api_key.prefix}"]')).to_have_count(0)

    def refused() -> bool:
        try:
            client.chat.completions.create(
                model="test-model", messages=[{"role": "user", "content": "again"}]
            )
        except openai.AuthenticationError:
            return True
        return False

    wait_until(refused, timeout=5)
    assert not errors, errors
    context.close()

    # A viewer sees the keys but no way to issue one, and a forged POST is refused.
    context, page, errors = sign_in(browser, gateway, "vicky")
    expect(page.get_by_test_id("keys-table")).to_contain_text("main")
    expect(page.get_by_test_id("new-key")).to_have_count(0)
    expect(page.get_by_role("button", name="Rotate")).to_have_count(0)
    csrf = next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")
    forged = page.request.post(
        "/dashboard/keys/new/",
        form={
            "csrfmiddlewaretoken": csrf,
            "name": "forged",
            "allowed_models": "test-model",
            "budget_period": "monthly",
        },
        headers={"X-CSRFToken": csrf, "Referer": gateway + "/dashboard/keys/"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert "CSRF" not in forged.text()  # refused for the role, not for a missing token
    assert not ApiKey.objects.filter(name="forged").exists()
    assert not errors, errors
    context.close()
