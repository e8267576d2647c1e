"""GET /v1/models and GET /v1/models/{model}: the models this key may use, in the
caller's protocol (an ``anthropic-version`` header asks for Anthropic's shape)."""

import orjson

from apps.gateway.call import authenticate
from apps.gateway.errors import ModelNotFound
from apps.gateway.exchange import Exchange
from apps.gateway.protocol.anthropic import anthropic_model, anthropic_model_list
from apps.gateway.state import GatewayState


async def handle_models(state: GatewayState, exchange: Exchange) -> None:
    key = await authenticate(state, exchange)
    catalog = await state.catalog.get()
    visible = [m for m in catalog.models if key.may_use(m.name)]
    path = exchange.scope["path"].rstrip("/")
    wanted = path[len("/v1/models/") :] if path.startswith("/v1/models/") else None
    if wanted is not None:
        visible = [m for m in visible if wanted in (m.name,)] or [
            m for m in visible if catalog.by_name.get(wanted) is m
        ]
        if not visible:
            raise ModelNotFound(wanted)
    if exchange.protocol == "anthropic":
        objects = [anthropic_model(m.name, m.display_name, m.created) for m in visible]
        payload = (
            objects[0] if wanted is not None else anthropic_model_list(objects, exchange.scope)
        )
    else:
        objects = [
            {"id": m.name, "object": "model", "created": m.created, "owned_by": "tollgate"}
            for m in visible
        ]
        payload = objects[0] if wanted is not None else {"object": "list", "data": objects}
    await exchange.respond(200, orjson.dumps(payload))
