"""Our language codes (``en``, ``pt-br``) and the backends' (Apertium: ``eng``, ``por_BR``).

Apertium names languages by ISO 639-3 and variants with an underscore (``cat_valencia``,
``por_BR``); LibreTranslate by ISO 639-1 (``en``, ``pt``, sometimes ``zh-Hans``). A code
with a region maps to the variant first and falls back to the plain language, so a reader
of ``pt-br`` gets Brazilian Portuguese where a pair has it and Portuguese otherwise.
"""

#: ISO 639-1 -> ISO 639-3 for the languages Apertium (and Whisper) commonly cover.
ISO3: dict[str, str] = {
    "af": "afr",
    "an": "arg",
    "ar": "ara",
    "ast": "ast",
    "be": "bel",
    "bg": "bul",
    "br": "bre",
    "ca": "cat",
    "cs": "ces",
    "cy": "cym",
    "da": "dan",
    "de": "deu",
    "el": "ell",
    "en": "eng",
    "eo": "epo",
    "es": "spa",
    "et": "est",
    "eu": "eus",
    "fi": "fin",
    "fr": "fra",
    "ga": "gle",
    "gl": "glg",
    "he": "heb",
    "hi": "hin",
    "hr": "hrv",
    "hu": "hun",
    "id": "ind",
    "is": "isl",
    "it": "ita",
    "kk": "kaz",
    "lt": "lit",
    "lv": "lav",
    "mk": "mkd",
    "ms": "msa",
    "mt": "mlt",
    "nb": "nob",
    "nl": "nld",
    "nn": "nno",
    "no": "nor",
    "oc": "oci",
    "pl": "pol",
    "pt": "por",
    "ro": "ron",
    "ru": "rus",
    "sc": "srd",
    "sk": "slk",
    "sl": "slv",
    "sq": "sqi",
    "sr": "srp",
    "sv": "swe",
    "tr": "tur",
    "tt": "tat",
    "uk": "ukr",
    "ur": "urd",
}


def split(language: str) -> tuple[str, str | None]:
    """``pt-br`` -> (``pt``, ``br``)."""
    primary, _, sub = language.lower().partition("-")
    return primary, sub or None


def apertium_codes(language: str) -> list[str]:
    """Apertium codes for one of ours, most specific first (``pt-br``: por_BR, por)."""
    primary, sub = split(language)
    base = ISO3.get(primary, primary if len(primary) == 3 else "")
    if not base:
        return []
    if sub is None:
        return [base]
    variant = sub.upper() if len(sub) == 2 else sub
    return [f"{base}_{variant}", base]


def libretranslate_codes(language: str) -> list[str]:
    """LibreTranslate codes for one of ours (``pt-br``: pt-BR, pt)."""
    primary, sub = split(language)
    if sub is None:
        return [primary]
    return [f"{primary}-{sub.upper() if len(sub) == 2 else sub}", primary]


def same_language(a: str, b: str) -> bool:
    """Whether two of our codes name the same language (regions aside: ``en``, ``en-gb``)."""
    return split(a)[0] == split(b)[0]
