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
# The openai SDK appends "chat/completions", "models" … to its base_url, so one configured
# as the bare host calls /chat/completions: the gateway answers there as under /v1.
BARE_API_ROOTS = frozenset({"chat", "completions", "embeddings", "responses", "models", "messages"})


def _gateway_path(path: str) -> str | None:
    if path.startswith("/v1/") or path == "/v1":
        return path
    if path.split("/", 2)[1] in BARE_API_ROOTS:
        return "/v1" + path
    return None


async def application(scope, receive, send) -> None:
    if scope["type"] == "http" and (path := _gateway_path(scope["path"])) is not None:
        if path is not scope["path"]:
            scope = {**scope, "path": path}
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
