"""Apertium APy (the default backend): rule-based, fast (~10 ms a sentence), and chained.

Pairs come from ``/listPairs`` (ISO 639-3 codes and variants); a direct pair is translated
with ``/translate``, a route through other languages with ``/translateChain`` (one request:
APy pipes the text through every hop), so English, Spanish, French, Catalan, Portuguese and
Italian all reach each other with the Debian pairs ``tools/bootstrap.sh`` installs.
Unknown words are passed through unmarked (``markUnknown=no``): a caption shows no ``*``.
"""

from collections.abc import Iterable

from translator_bridge.http import BackendClient
from translator_bridge.languages import apertium_codes
from translator_bridge.translator import BackendFailed, NoPair, Route, Translator


class ApertiumTranslator(Translator):
    """Apertium APy over HTTP (see the module docstring)."""

    name = "apertium"
    chains = True
    # Spanish is Apertium's best-connected language and its pairs the most mature; APy's
    # own /translateChain path search picks it too (fr -> es -> en, not fr -> ca -> en).
    pivots = ("spa", "eng", "cat")

    def __init__(
        self, base_url: str, *, timeout_s: float = 2.0, max_hops: int = 3, refresh_s: float = 60.0
    ) -> None:
        super().__init__(max_hops=max_hops, refresh_s=refresh_s)
        self.http = BackendClient(base_url, timeout_s=timeout_s, name=self.name)

    async def close(self) -> None:
        await self.http.close()

    def codes_for(self, language: str) -> list[str]:
        return apertium_codes(language)

    async def _discover(self) -> Iterable[tuple[str, str]]:
        status, body = await self.http.call("GET", "/listPairs")
        try:
            pairs = [
                (str(p["sourceLanguage"]), str(p["targetLanguage"])) for p in body["responseData"]
            ]
        except (KeyError, TypeError):
            raise BackendFailed(f"apertium /listPairs: HTTP {status}, unexpected body") from None
        return pairs

    async def _translate(self, text: str, route: Route) -> str:
        if route.hops == 0:
            return text
        if route.hops == 1:
            path = "/translate"
            form = {"langpair": "|".join(route.codes), "q": text, "markUnknown": "no"}
        else:
            path = "/translateChain"
            form = {"langpairs": "|".join(route.codes), "q": text, "markUnknown": "no"}
        status, body = await self.http.call("POST", path, form=form)
        if status == 400:
            # The pair went away since /listPairs (package removed): re-read them soon.
            self._discovered_at = 0.0
            raise NoPair(f"apertium {path}: pair not installed")
        try:
            translated = body["responseData"]["translatedText"]
        except (KeyError, TypeError):
            raise BackendFailed(f"apertium {path}: HTTP {status}, no translatedText") from None
        if status != 200 or not isinstance(translated, str):
            raise BackendFailed(f"apertium {path}: HTTP {status}")
        return " ".join(translated.split())
