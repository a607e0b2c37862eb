"""The language codes a participant may speak and read, shared by every service.

Codes are ours (:data:`schemas.ids.Lang`): an ISO 639-1 primary tag (or a 3-letter one
where no 2-letter code exists, such as ``haw``), with an optional region (``pt-br``).
A spoken language must be one speech recognition knows (Whisper's 99, which every model
the transcriber loads is a conversion of); a caption language may also be one only the
translators know. The gateway refuses any other code with a clear error, so a typo never
becomes a silent "nobody reads this" or a transcriber's dead letter.
"""

_WHISPER_CODES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha "
    "haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr "
    "ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg "
    "th tk tl tr tt uk ur uz vi yi yo yue zh"
)

#: The languages Whisper transcribes (``faster_whisper.tokenizer._LANGUAGE_CODES``).
SPOKEN: frozenset[str] = frozenset(_WHISPER_CODES.split())

#: Languages a translator may produce that nobody can be transcribed in (Apertium's).
READ_ONLY: frozenset[str] = frozenset({"an", "ast", "eo", "ga", "nb", "sc"})

READABLE: frozenset[str] = SPOKEN | READ_ONLY


def primary_tag(language: str) -> str:
    """``pt-br`` -> ``pt``."""
    return language.split("-", 1)[0]


def is_spoken(language: str) -> bool:
    """Whether speech in ``language`` can be transcribed."""
    return primary_tag(language) in SPOKEN


def is_readable(language: str) -> bool:
    """Whether captions can be shown in ``language``."""
    return primary_tag(language) in READABLE
