"""Alerts fixtures: a local webhook receiver (an HTTP server on 127.0.0.1 standing in for
a tenant's endpoint, answering a scripted list of statuses and recording every request),
tenants with owners and admins, and spend written as ledger rows."""

from __future__ import annotations

import http.server
import itertools
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from apps.alerts.services import webhook_endpoint_create
from apps.keys.services import api_key_issue
from apps.ledger.models import UsageRecord
from apps.tenants.models import Membership, Tenant


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=list)  # answered in turn; then 200
    requests: list[Received] = field(default_factory=list)
    redirect_to: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else 200


@pytest.fixture
def receiver():
    state = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.requests.append(Received(self.path, dict(self.headers.items()), body))
            status = state.answer()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", state.redirect_to or "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _no_delivery_tasks(settings):
    # Tests drive delivery themselves (deliveries_due_send / webhook_delivery_attempt).
    settings.ALERTS_DELIVER_ON_COMMIT = False


_users = itertools.count()


def member(tenant: Tenant, role: str, email: str | None = None):
    n = next(_users)
    user = get_user_model().objects.create_user(
        username=f"{tenant.name}-{role}-{n}", email=email or f"{role}{n}@{tenant.name}.example"
    )
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


def tenant_make(name: str, **fields) -> Tenant:
    tenant = Tenant.objects.create(name=name, **fields)
    member(tenant, "owner")
    member(tenant, "admin")
    member(tenant, "viewer")
    return tenant


def endpoint_make(tenant: Tenant, url: str, **fields):
    """An endpoint on the local receiver: staff allowed http and internal addresses."""
    fields.setdefault("allow_http", True)
    fields.setdefault("allow_internal", True)
    return webhook_endpoint_create(tenant=tenant, url=url, staff=True, **fields)


def spend(tenant: Tenant, price: str, *, key=None, at: datetime | None = None, prepaid=False):
    """One ledger row of ``price`` (what the tenant pays)."""
    key = key or tenant.api_keys.first() or api_key_issue(tenant=tenant, name="k")[0]
    return UsageRecord.objects.create(
        request_id=f"req-{uuid.uuid4().hex}",
        tenant=tenant,
        api_key=key,
        model="m",
        protocol="openai",
        status=200,
        outcome="ok",
        created_at=at or datetime.now(UTC),
        price=Decimal(price),
        prepaid=prepaid,
    )
