"""Key material of the gateway's tokens: the RS256 public key, and derived HMAC secrets.

Keys are parsed once, at start, into typed objects: an RS256 key is an ``RSAPublicKey``
object, never a string, so it can never be handed to HMAC (the classic algorithm-confusion
attack, where a public key is used as an HS256 secret).
"""

import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

#: RFC 7518 section 3.2: an HS256 key must be at least as long as the hash output.
MIN_HMAC_SECRET_BYTES = 32
_GUEST_KEY_LABEL = b"meeshy-calls/guest-and-share-link-tokens/v1"


def load_rsa_public_key(pem: str) -> RSAPublicKey:
    """The RSA public key of a PEM text (``\\n`` escapes allowed); ``ValueError`` otherwise.

    A private key, a certificate or another key type is refused: the gateway only verifies.
    """
    text = pem.replace("\\n", "\n").strip()
    if not text.startswith("-----BEGIN PUBLIC KEY-----"):
        raise ValueError("must be a PEM public key (-----BEGIN PUBLIC KEY-----)")
    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ValueError("is not a readable PEM public key") from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError("must be an RSA public key")
    if key.key_size < 2048:
        raise ValueError("must be an RSA key of at least 2048 bits")
    return key


def derive_guest_secret(jwt_secret: str) -> str:
    """A secret of its own for guest and link tokens, derived from the users' HS256 secret.

    Domain separation: whoever holds ``JWT_SECRET`` (the messenger) still cannot mint a
    guest token by signing with it directly, and the two kinds never share a key.
    """
    if not jwt_secret:
        return ""
    return hmac.new(jwt_secret.encode(), _GUEST_KEY_LABEL, hashlib.sha256).hexdigest()
