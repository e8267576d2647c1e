"""Calling upstreams: client (the aiohttp seam), bodies, failover, fallback; see
apps/gateway/__init__.py."""
