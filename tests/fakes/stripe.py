"""A fake of Stripe's HTTP API for the tests (run as a separate process), in Stripe's JSON
shapes, for the calls Tollgate makes through the real ``stripe`` library (its API base
pointed here):

    POST /v1/customers, GET /v1/customers/{id}
    POST /v1/checkout/sessions, GET /v1/checkout/sessions/{id}
    POST /v1/payment_intents (off_session + confirm), GET /v1/payment_intents/{id}
      (expand[]=payment_method)
    GET  /v1/payment_methods/{id}

Requests are form-encoded as the library sends them (``line_items[0][price_data][currency]``),
need ``Authorization: Bearer sk_…``, and POSTs honour ``Idempotency-Key`` (the same key
replays the first answer). Errors are Stripe's ``{"error": {"type", "code", "message"}}``;
a declined off-session charge is a 402 ``card_error`` carrying its payment intent.

The hosted checkout page is ``session.url`` (GET /checkout/{id}): a form with a card
number (Stripe's test cards: 4242… pays, 4000 0000 0000 0002 is declined at checkout,
4000 0000 0000 0341 pays but declines later off-session charges) and a Pay button. Paying
creates the payment method and intent, then sends the signed webhooks
(``payment_intent.succeeded`` first, then ``checkout.session.completed``: the order Stripe
does not promise), then redirects to success_url.

Webhooks are signed exactly as Stripe signs them: ``Stripe-Signature: t=<unix>,v1=<hex>``,
HMAC-SHA256 over ``f"{t}.{payload}"`` with the webhook secret (``stripe_signature``).

Control: POST /_config {"webhook_url", "webhook_secret", "deliver": bool, "decline": bool
(every off-session charge is declined)}, POST /_reset, GET /_stats ({"requests": [...],
"events": [{"id", "type", "payload", "signature", "status"}]}).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import time
from typing import Any

DECLINED_AT_CHECKOUT = "4000000000000002"
DECLINES_OFF_SESSION = "4000000000000341"
API_VERSION = "2025-09-30.clover"


def stripe_signature(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe sends with ``payload``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def event_payload(kind: str, obj: dict[str, Any], event_id: str | None = None) -> str:
    """A webhook body as Stripe serialises it (an ``event`` object)."""
    return json.dumps(
        {
            "id": event_id or f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "type": kind,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": obj},
        },
        indent=2,
    )


def _nested(pairs) -> dict[str, Any]:
    """Stripe's form encoding (``a[b][0][c]=v``) back into objects; arrays come as
    ``[0]``, ``[1]``, … and become lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"([^\[\]]+)", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(value: Any) -> Any:
        if isinstance(value, dict):
            value = {k: lists(v) for k, v in value.items()}
            if value and all(k.isdigit() for k in value):
                return [value[k] for k in sorted(value, key=int)]
        return value

    return lists(root)


def _id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.customers: dict[str, dict] = {}
        self.sessions: dict[str, dict] = {}
        self.session_extra: dict[str, dict] = {}
        self.intents: dict[str, dict] = {}
        self.methods: dict[str, dict] = {}
        self.cards: dict[str, str] = {}  # payment method id -> card number
        self.idempotent: dict[str, tuple[int, dict]] = {}
        self.requests: list[dict] = []
        self.events: list[dict] = []
        self.config: dict[str, Any] = {
            "webhook_url": "",
            "webhook_secret": "",
            "deliver": True,
            "decline": False,
        }


def build_app(port: int):
    from aiohttp import ClientSession, web

    state = State()
    base = f"http://127.0.0.1:{port}"
    counter = itertools.count(1)

    def error(status: int, kind: str, message: str, **extra: Any) -> web.Response:
        return web.json_response(
            {"error": {"type": kind, "message": message, **extra}},
            status=status,
            headers={"Request-Id": f"req_{next(counter)}"},
        )

    def ok(obj: dict, status: int = 200) -> web.Response:
        return web.json_response(obj, status=status, headers={"Request-Id": f"req_{next(counter)}"})

    async def deliver(kind: str, obj: dict) -> None:
        payload = event_payload(kind, obj)
        secret = state.config["webhook_secret"]
        event = {
            "id": json.loads(payload)["id"],
            "type": kind,
            "payload": payload,
            "signature": stripe_signature(payload, secret) if secret else "",
            "status": None,
        }
        state.events.append(event)
        if not (state.config["deliver"] and state.config["webhook_url"] and secret):
            return
        async with (
            ClientSession() as http,
            http.post(
                state.config["webhook_url"],
                data=payload.encode(),
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Stripe-Signature": event["signature"],
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                },
            ) as answer,
        ):
            event["status"] = answer.status

    @web.middleware
    async def api(request: web.Request, handler):
        if not request.path.startswith("/v1/"):
            return await handler(request)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer sk_"):
            return error(401, "invalid_request_error", "You did not provide an API key.")
        if request.method == "POST":
            params = _nested((await request.post()).items())
        else:
            params = _nested(request.query.items())
        request["params"] = params
        state.requests.append({"method": request.method, "path": request.path, "params": params})
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key:
            if key in state.idempotent:
                status, body = state.idempotent[key]
                return web.json_response(
                    body, status=status, headers={"Idempotent-Replayed": "true"}
                )
            response = await handler(request)
            state.idempotent[key] = (response.status, json.loads(response.body))
            return response
        return await handler(request)

    async def customer_create(request: web.Request) -> web.Response:
        p = request["params"]
        customer = {
            "id": _id("cus"),
            "object": "customer",
            "name": p.get("name"),
            "email": p.get("email"),
            "metadata": p.get("metadata", {}),
            "created": int(time.time()),
            "livemode": False,
        }
        state.customers[customer["id"]] = customer
        return ok(customer)

    async def customer_get(request: web.Request) -> web.Response:
        found = state.customers.get(request.match_info["id"])
        if found is None:
            return error(404, "invalid_request_error", "No such customer", code="resource_missing")
        return ok(found)

    async def session_create(request: web.Request) -> web.Response:
        p = request["params"]
        if p.get("mode") != "payment":
            return error(400, "invalid_request_error", "Only mode=payment is faked", param="mode")
        items = p.get("line_items") or []
        try:
            amounts = [
                int(i["price_data"]["unit_amount"]) * int(i.get("quantity", "1")) for i in items
            ]
            currency = items[0]["price_data"]["currency"]
        except (KeyError, IndexError, TypeError, ValueError):
            return error(400, "invalid_request_error", "Invalid line_items", param="line_items")
        if p.get("customer") and p["customer"] not in state.customers:
            return error(400, "invalid_request_error", "No such customer", param="customer")
        session_id = _id("cs")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "amount_subtotal": sum(amounts),
            "amount_total": sum(amounts),
            "currency": currency,
            "customer": p.get("customer"),
            "metadata": p.get("metadata", {}),
            "payment_intent": None,
            "success_url": p.get("success_url"),
            "cancel_url": p.get("cancel_url"),
            "url": f"{base}/checkout/{session_id}",
            "created": int(time.time()),
            "livemode": False,
        }
        state.sessions[session_id] = session
        state.session_extra[session_id] = p.get("payment_intent_data", {})
        return ok(session)

    async def session_get(request: web.Request) -> web.Response:
        found = state.sessions.get(request.match_info["id"])
        if found is None:
            return error(404, "invalid_request_error", "No such checkout session")
        return ok(found)

    def method_create(customer: str | None, card: str) -> dict:
        method = {
            "id": _id("pm"),
            "object": "payment_method",
            "type": "card",
            "card": {"brand": "visa", "last4": card[-4:], "exp_month": 12, "exp_year": 2034},
            "customer": customer,
            "created": int(time.time()),
            "livemode": False,
        }
        state.methods[method["id"]] = method
        state.cards[method["id"]] = card
        return method

    def intent_new(**fields: Any) -> dict:
        intent = {
            "id": _id("pi"),
            "object": "payment_intent",
            "amount": 0,
            "amount_received": 0,
            "currency": "usd",
            "customer": None,
            "payment_method": None,
            "status": "requires_payment_method",
            "metadata": {},
            "description": None,
            "setup_future_usage": None,
            "last_payment_error": None,
            "created": int(time.time()),
            "livemode": False,
        }
        intent.update(fields)
        state.intents[intent["id"]] = intent
        return intent

    def checkout_page(session: dict, message: str = "") -> web.Response:
        amount = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
        body = f"""<!doctype html><html><head><meta charset="utf-8"><title>Fake Stripe Checkout</title>
<link rel="icon" href="data:,"></head>
<body><h1>Pay {html.escape(amount)}</h1>
<p id="message">{html.escape(message)}</p>
<form method="post"><label for="card">Card number</label>
<input id="card" name="card" value="4242424242424242">
<button type="submit" id="pay">Pay</button></form>
<a href="{html.escape(session["cancel_url"] or "")}" id="cancel">Cancel</a></body></html>"""
        return web.Response(text=body, content_type="text/html")

    async def checkout_get(request: web.Request) -> web.Response:
        session = state.sessions.get(request.match_info["id"])
        if session is None:
            return web.Response(status=404, text="no such session")
        return checkout_page(session)

    async def checkout_pay(request: web.Request) -> web.Response:
        session = state.sessions.get(request.match_info["id"])
        if session is None:
            return web.Response(status=404, text="no such session")
        if session["status"] != "open":
            return web.Response(status=400, text="this session is no longer open")
        card = re.sub(r"\D", "", (await request.post()).get("card", ""))
        if card == DECLINED_AT_CHECKOUT:
            return checkout_page(session, "Your card was declined.")
        extra = state.session_extra[session["id"]]
        method = method_create(session["customer"], card)
        intent = intent_new(
            amount=session["amount_total"],
            amount_received=session["amount_total"],
            currency=session["currency"],
            customer=session["customer"],
            payment_method=method["id"],
            status="succeeded",
            metadata=extra.get("metadata", {}),
            setup_future_usage=extra.get("setup_future_usage"),
        )
        session.update(status="complete", payment_status="paid", payment_intent=intent["id"])
        await deliver("payment_intent.succeeded", intent)
        await deliver("checkout.session.completed", session)
        target = (session["success_url"] or "/").replace("{CHECKOUT_SESSION_ID}", session["id"])
        raise web.HTTPSeeOther(target)

    async def intent_create(request: web.Request) -> web.Response:
        p = request["params"]
        customer, method_id = p.get("customer"), p.get("payment_method")
        method = state.methods.get(method_id or "")
        if method is None:
            return error(
                400, "invalid_request_error", f"No such PaymentMethod: '{method_id}'",
                param="payment_method", code="resource_missing",
            )  # fmt: skip
        if method["customer"] != customer:
            return error(
                400, "invalid_request_error",
                "The provided PaymentMethod does not belong to this customer.",
                param="payment_method",
            )  # fmt: skip
        try:
            amount = int(p["amount"])
        except (KeyError, ValueError):
            return error(400, "invalid_request_error", "Missing required param: amount.")
        fields = {
            "amount": amount,
            "currency": p.get("currency", "usd"),
            "customer": customer,
            "payment_method": method_id,
            "metadata": p.get("metadata", {}),
            "description": p.get("description"),
        }
        if p.get("confirm") != "true" or p.get("off_session") != "true":
            return ok(intent_new(**fields))
        if state.config["decline"] or state.cards.get(method_id) == DECLINES_OFF_SESSION:
            failure = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
                "payment_method": method,
            }
            intent = intent_new(**fields, last_payment_error=failure)
            await deliver("payment_intent.payment_failed", intent)
            return error(
                402, "card_error", "Your card was declined.",
                code="card_declined", decline_code="generic_decline",
                payment_intent=intent, payment_method=method,
            )  # fmt: skip
        intent = intent_new(**fields, status="succeeded", amount_received=amount)
        await deliver("payment_intent.succeeded", intent)
        return ok(intent)

    async def intent_get(request: web.Request) -> web.Response:
        intent = state.intents.get(request.match_info["id"])
        if intent is None:
            return error(404, "invalid_request_error", "No such payment_intent")
        expand = request["params"].get("expand") or []
        if "payment_method" in expand and intent["payment_method"]:
            intent = {**intent, "payment_method": state.methods[intent["payment_method"]]}
        return ok(intent)

    async def method_get(request: web.Request) -> web.Response:
        found = state.methods.get(request.match_info["id"])
        if found is None:
            return error(404, "invalid_request_error", "No such PaymentMethod")
        return ok(found)

    async def configure(request: web.Request) -> web.Response:
        state.config.update(await request.json())
        return web.json_response(state.config)

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": state.requests, "events": state.events})

    app = web.Application(middlewares=[api])
    app.router.add_post("/v1/customers", customer_create)
    app.router.add_get("/v1/customers/{id}", customer_get)
    app.router.add_post("/v1/checkout/sessions", session_create)
    app.router.add_get("/v1/checkout/sessions/{id}", session_get)
    app.router.add_post("/v1/payment_intents", intent_create)
    app.router.add_get("/v1/payment_intents/{id}", intent_get)
    app.router.add_get("/v1/payment_methods/{id}", method_get)
    app.router.add_get("/checkout/{id}", checkout_get)
    app.router.add_post("/checkout/{id}", checkout_pay)
    app.router.add_post("/_config", configure)
    app.router.add_post("/_reset", reset)
    app.router.add_get("/_stats", stats)
    return app


if __name__ == "__main__":
    from aiohttp import web

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(args.port), host="127.0.0.1", port=args.port, print=None, access_log=None)
