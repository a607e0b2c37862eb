"""TranslatorBridge settings, read once from the environment."""

from typing import Annotated

import msgspec

from schemas.settings import ServiceSettings


class TranslatorBridgeSettings(ServiceSettings, frozen=True, kw_only=True):
    """Settings of one translator bridge instance."""

    #: Base URL of the translator backend (Apertium APy or LibreTranslate-compatible).
    translator_url: str = "http://127.0.0.1:2737"
    #: Entries kept in the translation cache.
    translator_cache_size: Annotated[int, msgspec.Meta(ge=0)] = 10_000
