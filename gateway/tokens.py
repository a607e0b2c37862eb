"""Bearer tokens: verifying the messenger's user JWTs, issuing dev, guest and link tokens.

User tokens (HS256 with ``JWT_SECRET`` or RS256 with ``JWT_PUBLIC_KEY``) must carry
``sub`` (the user id), the configured ``iss`` and ``aud``, and ``exp``; ``name`` and
``lang`` are optional. Guest tokens and share-link tokens are the gateway's own (HS256 with
the guest secret, their own issuer/audience), so a guest token can never pass as a user's.

The key is chosen by the token's ``alg`` among the configured algorithms only, and each
algorithm has its own key of its own type: the HS256 secret is a string, the RS256 key a
parsed ``RSAPublicKey`` object that HMAC cannot use. ``none`` is never accepted.
"""

import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from gateway.errors import CallError
from gateway.keys import load_rsa_public_key
from gateway.settings import GatewaySettings
from gateway.validation import is_encodable, normalize_lang
from schemas.ids import check_id, new_id

GUEST_ISSUER = "meeshy-calls-gateway"
GUEST_AUDIENCE = "meeshy-calls-guest"
LINK_AUDIENCE = "meeshy-calls-share-link"
_LEEWAY_S = 5

PrincipalKind = Literal["user", "guest"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a member (``user_id``) or a guest scoped to one conversation."""

    principal_id: str
    kind: PrincipalKind
    display_name: str = ""
    language: str = "en"
    #: Guests only: the one conversation the guest token admits to.
    conversation_id: str | None = None
    #: Guests only: the share link redeemed for the token (revoking it shuts the door).
    link_id: str | None = None
    #: When the token stops being valid (unix time): a live socket is re-checked against
    #: it and disconnected once it passes (``None``: a principal built without a token).
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at + _LEEWAY_S

    @property
    def user_id(self) -> str | None:
        return self.principal_id if self.kind == "user" else None


class TokenService:
    """Verifies and issues tokens for one gateway's settings."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._algorithms = settings.algorithms()
        self._hs_key = settings.jwt_secret if "HS256" in self._algorithms else ""
        self._rs_key: RSAPublicKey | None = None
        if "RS256" in self._algorithms and settings.jwt_public_key:
            self._rs_key = load_rsa_public_key(settings.jwt_public_key)

    # --- verification --------------------------------------------------------------------
    def verify(self, token: object) -> Principal:
        """The principal of a user or guest bearer token; raises ``CallError(unauthorized)``."""
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise CallError("unauthorized", "a bearer token is required")
        if not token.isascii():  # a JWT is base64url and dots; anything else is not one
            raise CallError("unauthorized", "the token is not a valid JWT")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise CallError("unauthorized", "the token is not a valid JWT") from None
        if unverified.get("iss") == GUEST_ISSUER:
            return self._verify_guest(token)
        return self._verify_user(token, str(header.get("alg", "")))

    def _verify_user(self, token: str, alg: str) -> Principal:
        if alg not in self._algorithms:
            raise CallError("unauthorized", "token algorithm not accepted")
        keys: dict[str, str | RSAPublicKey | None] = {"HS256": self._hs_key, "RS256": self._rs_key}
        key = keys.get(alg)
        if not key:
            raise CallError("unauthorized", "no key configured for this token algorithm")
        claims = self._decode(
            token, key, [alg], self._settings.jwt_audience, self._settings.jwt_issuer
        )
        return Principal(
            principal_id=_id_claim(claims, "sub"),
            kind="user",
            display_name=_str_claim(claims, "name"),
            language=_lang_claim(claims),
            expires_at=_exp_claim(claims),
        )

    def _verify_guest(self, token: str) -> Principal:
        secret = self._settings.guest_secret()
        if not secret:
            raise CallError("unauthorized", "guest access is not configured")
        claims = self._decode(token, secret, ["HS256"], GUEST_AUDIENCE, GUEST_ISSUER)
        if claims.get("kind") != "guest":
            raise CallError("unauthorized", "not a guest token")
        return Principal(
            principal_id=_id_claim(claims, "sub"),
            kind="guest",
            display_name=_str_claim(claims, "name"),
            language=_lang_claim(claims),
            conversation_id=_id_claim(claims, "conv"),
            link_id=_id_claim(claims, "lnk") if "lnk" in claims else None,
            expires_at=_exp_claim(claims),
        )

    @staticmethod
    def _decode(
        token: str, key: str | RSAPublicKey, algs: list[str], aud: str, iss: str
    ) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algs,
                audience=aud,
                issuer=iss,
                leeway=_LEEWAY_S,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise CallError("unauthorized", "the token has expired") from None
        except jwt.InvalidAudienceError:
            raise CallError("unauthorized", "the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise CallError("unauthorized", "the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise CallError("unauthorized", "the token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise CallError("unauthorized", f"invalid token ({type(exc).__name__})") from None
        return claims

    # --- issuing -------------------------------------------------------------------------
    def issue_dev_token(self, user_id: str, display_name: str, language: str) -> str:
        """A user token as the messenger would issue it (dev endpoint only)."""
        if not self._settings.jwt_secret:
            raise CallError("unavailable", "dev tokens need JWT_SECRET")
        now = int(time.time())
        claims = {
            "sub": user_id,
            "name": display_name,
            "lang": language,
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "iat": now,
            "exp": now + int(self._settings.dev_token_ttl_s),
        }
        return jwt.encode(claims, self._settings.jwt_secret, algorithm="HS256")

    def issue_guest_token(
        self,
        conversation_id: str,
        display_name: str,
        language: str,
        link_id: str | None = None,
        *,
        guest_id: str | None = None,
    ) -> tuple[str, Principal]:
        secret = self._require_guest_secret()
        guest_id = guest_id or new_guest_id()
        now = int(time.time())
        expires = now + int(self._settings.guest_token_ttl_s)
        claims: dict[str, object] = {
            "sub": guest_id,
            "kind": "guest",
            "conv": conversation_id,
            "name": display_name,
            "lang": language,
            "iss": GUEST_ISSUER,
            "aud": GUEST_AUDIENCE,
            "iat": now,
            "exp": expires,
        }
        if link_id is not None:
            claims["lnk"] = link_id
        principal = Principal(
            guest_id,
            "guest",
            display_name,
            language,
            conversation_id,
            link_id,
            expires_at=float(expires),
        )
        return jwt.encode(claims, secret, algorithm="HS256"), principal

    def issue_link_token(self, link_id: str, conversation_id: str, expires_at: float) -> str:
        secret = self._require_guest_secret()
        claims = {
            "sub": link_id,
            "conv": conversation_id,
            "iss": GUEST_ISSUER,
            "aud": LINK_AUDIENCE,
            "exp": int(expires_at),
        }
        return jwt.encode(claims, secret, algorithm="HS256")

    def verify_link_token(self, token: str) -> tuple[str, str]:
        """``(link_id, conversation_id)`` of a share-link token."""
        if not token or len(token) > 4096 or not token.isascii():
            raise CallError("unauthorized", "a share link is required")
        claims = self._decode(
            token, self._require_guest_secret(), ["HS256"], LINK_AUDIENCE, GUEST_ISSUER
        )
        return _id_claim(claims, "sub"), _id_claim(claims, "conv")

    def _require_guest_secret(self) -> str:
        secret = self._settings.guest_secret()
        if not secret:
            raise CallError("unavailable", "guest access is not configured")
        return secret


def new_guest_id() -> str:
    return f"guest-{new_id()[:16]}"


def _id_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str):
        raise CallError("unauthorized", f"the token has no valid '{name}' claim")
    try:
        return check_id(value, name)
    except ValueError:
        raise CallError("unauthorized", f"the token's '{name}' claim is not a valid id") from None


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _str_claim(claims: dict[str, Any], name: str) -> str:
    """A short printable string (display names travel to other people's screens).

    Text that cannot be encoded (an unpaired surrogate: half an emoji cut by a JavaScript
    ``slice``) refuses the token: it would fail later, wherever the name is written.
    """
    value = claims.get(name, "")
    if not isinstance(value, str):
        return ""
    if not is_encodable(value):
        raise CallError("unauthorized", f"the token's '{name}' claim is not valid text")
    return _CONTROL_RE.sub("", value)[:100].strip()


def _exp_claim(claims: dict[str, Any]) -> float:
    value = claims.get("exp")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CallError("unauthorized", "the token has no valid 'exp' claim")
    return float(value)


def _lang_claim(claims: dict[str, Any]) -> str:
    return normalize_lang(claims.get("lang"))
