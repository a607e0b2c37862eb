"""TranslatorBridge settings, read once from the environment."""

from typing import Annotated, ClassVar, Literal

import msgspec

from schemas.settings import PositiveFloat, ServiceSettings


class TranslatorBridgeSettings(ServiceSettings, frozen=True, kw_only=True):
    """Settings of one translator bridge instance."""

    secret_fields: ClassVar[frozenset[str]] = frozenset(
        {"nats_password", "nats_token", "translator_api_key"}
    )

    #: ``apertium`` (Apertium APy, the default) or ``libretranslate`` (any service speaking
    #: LibreTranslate's API, e.g. a neural translator).
    translator_backend: Literal["apertium", "libretranslate"] = "apertium"
    #: Base URL of the translator backend.
    translator_url: str = "http://127.0.0.1:2737"
    #: LibreTranslate API key, if the service wants one (a secret, never logged).
    translator_api_key: str = ""
    #: Entries kept in the translation cache (0: no cache).
    translator_cache_size: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    #: Longest wait for one translation (a slot included); then the caption goes out
    #: untranslated, marked ``timeout``.
    translator_timeout_s: PositiveFloat = 2.0
    #: Translations in flight to the backend at once.
    translator_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    #: Most languages a route may pass through (1: direct pairs only).
    translator_max_hops: Annotated[int, msgspec.Meta(ge=1, le=4)] = 3
    #: How often the backend's language pairs are read again.
    translator_refresh_s: PositiveFloat = 60.0
    #: Segments handled at once by this instance (beyond it, the subscription waits).
    translator_bridge_max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    #: Queue group shared by every bridge instance (each segment goes to one).
    translator_bridge_queue: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = (
        "translator-bridges"
    )
