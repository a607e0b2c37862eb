"""A LibreTranslate-compatible HTTP service (neural translators: LibreTranslate itself,
or anything speaking its API): ``GET /languages``, ``POST /translate``.

Pairs come from ``/languages`` (each language's ``targets``). LibreTranslate has no chain
endpoint; a language pair it lacks is routed through others hop by hop (one request each).
"""

from collections.abc import Iterable
from typing import Any

from translator_bridge.http import BackendClient
from translator_bridge.languages import libretranslate_codes
from translator_bridge.translator import BackendFailed, NoPair, Route, Translator


class LibreTranslateTranslator(Translator):
    """A LibreTranslate-compatible service (see the module docstring)."""

    name = "libretranslate"
    chains = True
    pivots = ("en",)

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        timeout_s: float = 2.0,
        max_hops: int = 2,
        refresh_s: float = 60.0,
    ) -> None:
        super().__init__(max_hops=max_hops, refresh_s=refresh_s)
        self.http = BackendClient(base_url, timeout_s=timeout_s, name=self.name)
        self._api_key = api_key

    async def close(self) -> None:
        await self.http.close()

    def codes_for(self, language: str) -> list[str]:
        return libretranslate_codes(language)

    async def _discover(self) -> Iterable[tuple[str, str]]:
        status, body = await self.http.call("GET", "/languages")
        if status != 200 or not isinstance(body, list):
            raise BackendFailed(f"libretranslate /languages: HTTP {status}")
        pairs: list[tuple[str, str]] = []
        try:
            for language in body:
                source = str(language["code"])
                for target in language.get("targets", []):
                    if str(target) != source:
                        pairs.append((source, str(target)))
        except (KeyError, TypeError, AttributeError):
            raise BackendFailed("libretranslate /languages: unexpected body") from None
        return pairs

    async def _translate(self, text: str, route: Route) -> str:
        for source, target in zip(route.codes, route.codes[1:], strict=False):
            text = await self._one(text, source, target)
        return text

    async def _one(self, text: str, source: str, target: str) -> str:
        payload: dict[str, Any] = {"q": text, "source": source, "target": target}
        payload["format"] = "text"
        if self._api_key:
            payload["api_key"] = self._api_key
        status, body = await self.http.call("POST", "/translate", json=payload)
        if status == 400 and isinstance(body, dict) and "not supported" in str(body.get("error")):
            self._discovered_at = 0.0
            raise NoPair(f"libretranslate: {source} -> {target} not supported")
        if status != 200 or not isinstance(body, dict):
            raise BackendFailed(f"libretranslate /translate: HTTP {status}")
        translated = body.get("translatedText")
        if not isinstance(translated, str):
            raise BackendFailed("libretranslate /translate: no translatedText")
        return translated.strip()
