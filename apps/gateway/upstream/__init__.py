"""Calling upstreams: client (the aiohttp seam), bodies, failover; see apps/gateway/__init__.py."""
