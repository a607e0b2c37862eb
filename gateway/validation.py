"""Shape checks of what clients send: SDP, ICE candidates, names and languages.

Each check raises ``CallError("bad_request", reason)``; the reason names the field and
the rule, never the value.
"""

import re
from typing import Annotated, Any

import msgspec

from gateway.errors import CallError
from schemas import languages
from schemas.ids import ID_PATTERN, LANG_PATTERN, check_id

#: An id a client sends: the full subject-token pattern is enforced where ids enter.
ClientId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, max_length=128)]

_LANG_RE = re.compile(LANG_PATTERN)
_SDP_LINE_RE = re.compile(r"^[a-z]=[^\x00]*$")
_CANDIDATE_RE = re.compile(r"^(a=)?candidate:[A-Za-z0-9+/]{1,32} \d{1,5} (udp|tcp|UDP|TCP) \d+ ")
_MID_RE = re.compile(r"^[A-Za-z0-9_.\-]{0,64}$")
_NAME_BAD_RE = re.compile(r"[\x00-\x1f\x7f]")

SIGNAL_TYPES = ("offer", "answer", "ice-candidate", "ice-restart")


def valid_id(value: str, what: str) -> str:
    """``value`` if it is a valid id, else ``CallError("bad_request")``."""
    try:
        return check_id(value, what)
    except ValueError:
        raise CallError("bad_request", f"{what} must match {ID_PATTERN}") from None


def normalize_lang(value: object, default: str = "en") -> str:
    if isinstance(value, str):
        lowered = value.strip().lower().replace("_", "-")
        if _LANG_RE.fullmatch(lowered):
            return lowered
    return default


def check_lang(value: str, what: str = "language") -> str:
    lowered = value.strip().lower().replace("_", "-")
    if not _LANG_RE.fullmatch(lowered):
        raise CallError("bad_request", f"{what} must be a code such as en, fr or pt-br")
    return lowered


def check_spoken_language(value: str, what: str = "language") -> str:
    """A language someone speaks: well formed and one speech recognition knows."""
    code = check_lang(value, what)
    if not languages.is_spoken(code):
        raise CallError("bad_request", f"{what}: speech in this language cannot be transcribed")
    return code


def check_caption_language(value: str, what: str = "captionLanguage") -> str:
    """A language someone reads captions in: well formed and known."""
    code = check_lang(value, what)
    if not languages.is_readable(code):
        raise CallError("bad_request", f"{what}: unknown language code")
    return code


def check_display_name(value: str) -> str:
    name = value.strip()
    if not 1 <= len(name) <= 64 or _NAME_BAD_RE.search(name):
        raise CallError("bad_request", "display name must be 1-64 printable characters")
    return name


def check_sdp(sdp: object, max_bytes: int) -> str:
    """A session description: size-bounded, ``v=0`` first, ``<letter>=<value>`` lines."""
    if not isinstance(sdp, str) or not sdp:
        raise CallError("bad_request", "sdp must be a non-empty string")
    if len(sdp.encode()) > max_bytes:
        raise CallError("bad_request", f"sdp is larger than {max_bytes} bytes")
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0":
        raise CallError("bad_request", "sdp must start with v=0")
    if not any(line.startswith("m=") for line in lines):
        raise CallError("bad_request", "sdp has no media section")
    for line in lines:
        if not _SDP_LINE_RE.fullmatch(line):
            raise CallError("bad_request", "sdp has a malformed line")
    return sdp


def check_candidate(candidate: object, max_bytes: int) -> dict[str, Any]:
    """An RTCIceCandidateInit: ``candidate`` (empty = end of candidates), sdpMid, index."""
    if not isinstance(candidate, dict):
        raise CallError("bad_request", "candidate must be an object")
    text = candidate.get("candidate", "")
    if not isinstance(text, str) or len(text.encode()) > max_bytes:
        raise CallError("bad_request", f"candidate must be a string under {max_bytes} bytes")
    if text and not _CANDIDATE_RE.match(text):
        raise CallError("bad_request", "candidate is not an ICE candidate line")
    mid = candidate.get("sdpMid")
    if mid is not None and (not isinstance(mid, str) or not _MID_RE.fullmatch(mid)):
        raise CallError("bad_request", "sdpMid must be a short token")
    index = candidate.get("sdpMLineIndex")
    if index is not None and (
        not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 64
    ):
        raise CallError("bad_request", "sdpMLineIndex must be an integer 0-63")
    out: dict[str, Any] = {"candidate": text, "sdpMid": mid, "sdpMLineIndex": index}
    ufrag = candidate.get("usernameFragment")
    if isinstance(ufrag, str) and len(ufrag) <= 256:
        out["usernameFragment"] = ufrag
    return out
