"""Calling upstreams: client (the aiohttp seam), bodies, balancing (the order of a
model's deployments), failover, health (the breakers), fallback; see
apps/gateway/__init__.py."""
