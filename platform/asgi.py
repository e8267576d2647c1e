"""ASGI entry point: /v1/* goes straight to the gateway, everything else to Django."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.platform.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402

from apps.gateway.app import GatewayApp  # noqa: E402
from apps.gateway.demo_upstream import demo_upstream  # noqa: E402

gateway = GatewayApp()
DEMO_UPSTREAM = settings.DEMO_UPSTREAM


async def application(scope, receive, send) -> None:
    if scope["type"] == "http" and (scope["path"].startswith("/v1/") or scope["path"] == "/v1"):
        await gateway(scope, receive, send)
    elif DEMO_UPSTREAM and scope["type"] == "http" and scope["path"].startswith("/demo-upstream/"):
        await demo_upstream(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await django_application(scope, receive, send)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await gateway.startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await gateway.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
