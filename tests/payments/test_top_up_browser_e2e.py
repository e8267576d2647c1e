"""In a real browser (Chromium via Playwright) against the platform served by uvicorn with
Stripe pointed at the fake: an owner tops up through the hosted checkout page and sees the
new balance (the fake delivers the signed webhook to the server before it redirects back);
a viewer sees the balance but no top-up or auto-recharge controls, and cannot POST them."""

from collections.abc import Iterator

import httpx
import pytest

from apps.tenants.models import BillingMode, Membership, Tenant
from tests.conftest import start_gateway
from tests.dashboard.conftest import make_user
from tests.dashboard.test_browser_e2e import ARTIFACTS, browser, sign_in  # noqa: F401
from tests.payments.conftest import SECRET_KEY, WEBHOOK, WEBHOOK_SECRET

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stripe_gateway(server_env, fake_stripe_url) -> Iterator[str]:
    process = start_gateway(
        server_env,
        name="gateway-stripe",
        STRIPE_SECRET_KEY=SECRET_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=fake_stripe_url,
        STRIPE_CHECKOUT_ORIGIN=fake_stripe_url,
    )
    yield f"http://127.0.0.1:{process.port}"
    process.stop()


def test_owner_tops_up_through_checkout_viewer_cannot(
    browser,  # noqa: F811
    transactional_db,
    stripe_gateway,
    fake_stripe_url,
):
    from playwright.sync_api import expect

    httpx.post(fake_stripe_url + "/_reset").raise_for_status()
    httpx.post(
        fake_stripe_url + "/_config",
        json={"webhook_url": stripe_gateway + WEBHOOK, "webhook_secret": WEBHOOK_SECRET},
    ).raise_for_status()
    tenant = Tenant.objects.create(name="prepaid-co", billing_mode=BillingMode.PREPAID)
    make_user("paula", tenant=tenant, role=Membership.Role.OWNER)
    make_user("victor", tenant=tenant, role=Membership.Role.VIEWER)
    ARTIFACTS.mkdir(exist_ok=True)

    context, page, errors = sign_in(browser, stripe_gateway, "paula")
    page.get_by_role("link", name="Balance").click()
    expect(page.get_by_test_id("balance")).to_have_text("$0.00")
    page.fill("#id_top_up_amount", "25")
    page.get_by_test_id("top-up").click()
    page.wait_for_url(fake_stripe_url + "/checkout/**")
    expect(page.get_by_role("heading")).to_have_text("Pay 25.00 USD")
    page.click("#pay")
    page.wait_for_url("**/dashboard/balance/?top_up=paid")
    expect(page.get_by_test_id("balance")).to_have_text("$25.00")
    expect(page.get_by_test_id("top-ups")).to_contain_text("paid")
    expect(page.get_by_test_id("recharge-state")).to_contain_text("visa •••• 4242")
    page.screenshot(path=str(ARTIFACTS / "dashboard-balance-top-up.png"), full_page=True)
    assert errors == []
    context.close()

    context, page, errors = sign_in(browser, stripe_gateway, "victor")
    page.goto("/dashboard/balance/")
    expect(page.get_by_test_id("balance")).to_have_text("$25.00")
    expect(page.get_by_test_id("payments-panel")).to_be_visible()
    expect(page.get_by_test_id("top-up-form")).to_have_count(0)
    expect(page.get_by_test_id("auto-recharge-form")).to_have_count(0)
    csrf = next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": csrf, "Referer": stripe_gateway + "/dashboard/balance/"}
    top_up = page.request.post(
        "/dashboard/payments/top-up/", form={"amount": "25"}, headers=headers, max_redirects=0
    )
    assert top_up.status == 403
    assert "CSRF" not in top_up.text()  # refused for the role, not for the form
    recharge = page.request.post(
        "/dashboard/payments/auto-recharge/",
        form={"enabled": "on", "threshold": "10", "amount": "20", "window_minutes": "60"},
        headers=headers,
        max_redirects=0,
    )
    assert recharge.status == 403
    assert errors == []
    context.close()
