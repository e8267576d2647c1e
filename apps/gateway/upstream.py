"""The pooled upstream HTTP client, one per process.

aiohttp directly: on this machine it costs ~0.28 ms CPU per proxied request against
~0.55 ms for httpx over the aiohttp transport and ~1.8 ms for httpx's default one; the
0.5 ms per-request budget leaves no room for the httpx layer on the hot path.
"""

import aiohttp

from apps.gateway.caches import DeploymentInfo


class UpstreamClient:
    def __init__(self, pool_size: int) -> None:
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",)
            )
        return self._session

    def post(
        self,
        deployment: DeploymentInfo,
        path: str,
        body: bytes,
        *,
        stream: bool,
        extra_headers: dict[str, str] | None = None,
    ) -> "aiohttp.client._RequestContextManager":
        headers = {"Content-Type": "application/json", **deployment.headers}
        if extra_headers:
            headers.update(extra_headers)
        if stream:
            timeout = aiohttp.ClientTimeout(
                total=None, connect=deployment.connect_timeout_s, sock_read=deployment.timeout_s
            )
        else:
            timeout = aiohttp.ClientTimeout(
                total=deployment.timeout_s, connect=deployment.connect_timeout_s
            )
        return self.session.post(
            deployment.base_url + path, data=body, headers=headers, timeout=timeout
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
