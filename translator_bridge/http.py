"""One HTTP client per backend, with the timeouts and error mapping both backends share."""

from typing import Any

import aiohttp

from translator_bridge.translator import BackendFailed, TranslationTimeout

#: Seconds to open a connection to the backend (it runs next door, or nowhere).
CONNECT_TIMEOUT_S = 1.0


class BackendClient:
    """A pooled aiohttp session to one base URL, answering decoded JSON or typed errors."""

    def __init__(self, base_url: str, *, timeout_s: float, name: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.name = name
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout_s, sock_connect=min(CONNECT_TIMEOUT_S, self.timeout_s)
                ),
                # Loopback or a private service: never a proxy from the environment.
                trust_env=False,
            )
        return self._session

    async def call(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body); raises BackendFailed / TranslationTimeout."""
        url = self.base_url + path
        try:
            async with self._client().request(method, url, data=form, json=json) as resp:
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    raise BackendFailed(
                        f"{self.name} {path}: HTTP {resp.status}, not JSON"
                    ) from None
                return resp.status, body
        except TimeoutError:
            raise TranslationTimeout(
                f"{self.name} {path}: no answer within {self.timeout_s:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise BackendFailed(f"{self.name} {path}: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
