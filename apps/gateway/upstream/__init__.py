"""Calling upstreams: client (the aiohttp seam), bodies, balancing (the order of a
model's deployments), failover; see apps/gateway/__init__.py."""
