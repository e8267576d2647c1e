"""Spend alerts, tenant webhooks and alert email.

Modules, lowest first (each imports only from those above it; nothing else in Tollgate
imports below ``services``):

``events``, ``signing``, ``egress``
    Plain Python: the event types; the ``Tollgate-Signature`` header (Stripe's scheme);
    outbound requests with the SSRF guard and the pinned transport (the only httpx
    importer).
``models``
    AlertSettings (thresholds), AlertEvent (an alert, once per (tenant, dedupe_key): the
    outbox), AlertFired (a threshold's once-per-period state), WebhookEndpoint,
    WebhookDelivery (one event to one endpoint) and WebhookAttempt (the delivery log).
``selectors``
    Reads, through ``for_tenant``.
``services``
    Writes: settings, endpoints, ``alert_send`` (the public way to raise an alert) and
    the test event.
``delivery``
    Sending the outbox: webhook attempts with retries and backoff, emails.
``evaluation``
    Budget and balance thresholds → ``alert_send``.
``tasks``, ``views``, ``urls``
    Celery tasks (``alerts.evaluate``, ``alerts.deliver_due`` on the beat; ``alerts.deliver``
    and ``alerts.email`` right after an alert commits), the management API.

Dashboard pages are in apps/dashboard/views/alerts.py. Imports go from here to tenants,
keys, ledger, limits, wallet, catalog (crypto) and audit, never back.
"""
