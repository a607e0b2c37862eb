"""What counts as a weak secret, and the development defaults production must never use.

``PRODUCTION_MODE=true`` (every service, ``schemas.settings.ServiceSettings``) refuses to
start on a secret that is unset where one is needed, shorter than its minimum, one of the
well-known defaults below (the embedded stack's, the tests', the usual placeholders), or
with too little variety to be random. The refusal names the variable and the rule, never
the value.
"""

#: Development-only identity secrets of the embedded gateway (``make run``); compose.yaml
#: sets real ones, and production mode refuses these.
DEV_JWT_SECRET = "embedded-stack-dev-only-jwt-secret-0123456789"
DEV_OPERATOR_TOKEN = "embedded-stack-dev-operator-token"

#: Shortest NATS password, operator token or TURN secret production mode accepts.
MIN_SECRET_BYTES = 24
#: A random secret of that length has far more distinct characters than this.
MIN_DISTINCT_CHARACTERS = 10

_KNOWN_DEFAULTS = frozenset(
    {
        DEV_JWT_SECRET,
        DEV_OPERATOR_TOKEN,
        # tests/support/gateways.py
        "test-jwt-secret-that-is-long-enough-for-hs256",
        "test-operator-token",
        "test-turn-secret",
    }
)
#: Words that mark a placeholder, not a secret (compared case-insensitively).
_PLACEHOLDER_WORDS = (
    "changeme",
    "change-me",
    "change_me",
    "replace-me",
    "placeholder",
    "example",
    "password",
    "secret-here",
    "dev-only",
    "insecure",
    "default",
)


def weakness(value: str | None, min_bytes: int = MIN_SECRET_BYTES) -> str | None:
    """Why ``value`` is not an acceptable production secret, or ``None`` if it is."""
    if not value:
        return "is not set"
    if value in _KNOWN_DEFAULTS:
        return "is a well-known development or test default"
    lowered = value.lower()
    if any(word in lowered for word in _PLACEHOLDER_WORDS):
        return "looks like a placeholder, not a secret"
    if len(value.encode()) < min_bytes:
        return f"is shorter than {min_bytes} bytes"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"has fewer than {MIN_DISTINCT_CHARACTERS} distinct characters (not random)"
    return None
