"""Tokens, TURN credentials, input validation and rate limits (no network)."""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.errors import CallError
from gateway.ice import ice_servers, turn_credentials
from gateway.rate_limit import RateLimiter
from gateway.settings import GatewaySettings
from gateway.tokens import GUEST_AUDIENCE, GUEST_ISSUER, TokenService
from gateway.validation import check_candidate, check_sdp
from schemas.errors import SettingsError

SECRET = "unit-test-secret-unit-test-secret-32"


def settings(**kw: object) -> GatewaySettings:
    return GatewaySettings(jwt_secret=SECRET, **kw)  # type: ignore[arg-type]


def user_token(key: str = SECRET, alg: str = "HS256", **claims: object) -> str:
    now = int(time.time())
    body = {"sub": "alice", "iss": "meeshy", "aud": "meeshy-calls", "exp": now + 60, "name": "A"}
    body.update(claims)
    return jwt.encode(body, key, algorithm=alg)


def test_user_tokens_hs256_and_rs256() -> None:
    tokens = TokenService(settings())
    who = tokens.verify(user_token(lang="FR"))
    assert (who.principal_id, who.kind, who.language) == ("alice", "user", "fr")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    rs = TokenService(settings(jwt_public_key=pem, jwt_algorithms="RS256"))
    signed = jwt.encode(
        {"sub": "bob", "iss": "meeshy", "aud": "meeshy-calls", "exp": int(time.time()) + 60},
        private,
        algorithm="RS256",
    )
    assert rs.verify(signed).principal_id == "bob"
    with pytest.raises(CallError):  # HS256 not accepted by an RS256-only gateway
        rs.verify(user_token())


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: user_token(exp=int(time.time()) - 60), "expired"),
        (lambda: user_token(key="another-secret-another-secret-32b"), "signature"),
        (lambda: user_token(aud="elsewhere"), "audience"),
        (lambda: user_token(iss="evil"), "issuer"),
        (lambda: user_token(sub="has.dot"), "sub"),
        (lambda: "garbage", "JWT"),
        (lambda: None, "required"),
    ],
)
def test_bad_user_tokens_are_refused_with_a_reason(make: Callable[[], object], reason: str) -> None:
    with pytest.raises(CallError) as refused:
        TokenService(settings()).verify(make())
    assert refused.value.code == "unauthorized" and reason in refused.value.message


def test_guest_and_link_tokens_cannot_pass_for_each_other() -> None:
    tokens = TokenService(settings(guest_token_secret="guest-secret-guest-secret-32bytes"))
    guest_token, _ = tokens.issue_guest_token("grp-1", "Gus", "de")
    who = tokens.verify(guest_token)
    assert who.kind == "guest" and who.conversation_id == "grp-1" and who.user_id is None
    link = tokens.issue_link_token("lnk-1", "grp-1", time.time() + 60)
    assert tokens.verify_link_token(link) == ("lnk-1", "grp-1")
    with pytest.raises(CallError):
        tokens.verify(link)
    with pytest.raises(CallError):
        tokens.verify_link_token(guest_token)


def test_turn_credentials_follow_coturn_rest_api() -> None:
    username, credential = turn_credentials("s3cret", "alice", 3600, now=1000.0)
    assert username == "4600:alice"
    expected = base64.b64encode(hmac.new(b"s3cret", b"4600:alice", hashlib.sha1).digest())
    assert credential == expected.decode()
    cfg = ice_servers(
        settings(
            stun_urls="stun:t:3478",
            turn_urls="turn:t:3478",
            turn_secret="s3cret",
            turn_ttl_s=7200,
        ),
        call_id="c1",
        participant_id="p1",
        now=1000.0,
    )
    assert cfg["iceServers"][0] == {"urls": ["stun:t:3478"]}
    # Named after the call and the participant, so coturn's logs say whose relay it is.
    assert cfg["iceServers"][1]["username"] == "8200:c1.p1" and cfg["expiresAt"] == 8200
    # No third-party STUN unless configured: host candidates only (loopback, LAN).
    assert ice_servers(settings(), call_id="c1", participant_id="p1")["iceServers"] == []


def test_sdp_and_candidate_shapes() -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 RTP/AVP 0\r\n"
    assert check_sdp(sdp, 1024) == sdp
    for bad in ("", "m=audio", "v=0\r\ns=-\r\n", "v=0\r\nm=audio\r\nNOPE\r\n", 5):
        with pytest.raises(CallError):
            check_sdp(bad, 1024)
    with pytest.raises(CallError):
        check_sdp(sdp + "a=x\r\n" * 400, 1024)
    good = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host", "sdpMid": "0"}
    assert check_candidate(good, 512)["sdpMid"] == "0"
    assert check_candidate({"candidate": ""}, 512)["candidate"] == ""  # end of candidates
    for bad_c in ({"candidate": "x"}, {"candidate": 1}, {"sdpMLineIndex": 99}, {"sdpMid": "a b"}):
        with pytest.raises(CallError):
            check_candidate(bad_c, 512)


def test_rate_limiter_bursts_then_refuses_per_user_and_family() -> None:
    limiter = RateLimiter(settings(rate_signal_per_s=1, rate_signal_burst=3))
    for _ in range(3):
        limiter.check("alice", "call:signal")
    with pytest.raises(CallError) as limited:
        limiter.check("alice", "call:signal")
    assert limited.value.code == "rate_limited"
    limiter.check("bob", "call:signal")  # someone else is unaffected
    limiter.check("alice", "call:heartbeat")  # another family is unaffected


def test_secrets_are_redacted() -> None:
    shown = repr(settings(turn_secret="t", operator_token="o", guest_token_secret="g"))
    assert SECRET not in shown and "operator_token='***'" in shown


def _rsa_pair() -> tuple[rsa.RSAPrivateKey, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, pem


def _forge_hs256(claims: dict[str, object], secret: bytes) -> str:
    """An HS256 token signed with any bytes (PyJWT refuses to sign with a PEM as secret)."""

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    head = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret, head + b"." + body, hashlib.sha256).digest()
    return (head + b"." + body + b"." + b64(mac)).decode()


def test_a_public_key_is_never_an_hmac_secret() -> None:
    """Algorithm confusion: with HS256 and RS256 both accepted, an HS256 token signed with
    the (public) RSA key must not verify."""
    _, pem = _rsa_pair()
    tokens = TokenService(settings(jwt_public_key=pem, jwt_algorithms="HS256,RS256"))
    claims = {"sub": "mallory", "iss": "meeshy", "aud": "meeshy-calls", "exp": time.time() + 60}
    for secret in (pem.encode(), pem.strip().encode()):
        with pytest.raises(CallError) as refused:
            tokens.verify(_forge_hs256(claims, secret))
        assert refused.value.code == "unauthorized"
    rs_only = TokenService(settings(jwt_public_key=pem, jwt_algorithms="RS256"))
    with pytest.raises(CallError):
        rs_only.verify(_forge_hs256(claims, pem.encode()))


def test_none_and_unlisted_algorithms_and_missing_claims_are_refused() -> None:
    tokens = TokenService(settings())
    now = int(time.time())
    full = {"sub": "alice", "iss": "meeshy", "aud": "meeshy-calls", "exp": now + 60}
    unsigned = jwt.encode(full, "", algorithm="none")
    hs512 = jwt.encode(full, SECRET + "-longer-for-hs512-longer-for-hs512", algorithm="HS512")
    for token in (unsigned, hs512):
        with pytest.raises(CallError, match="algorithm"):
            tokens.verify(token)
    for missing in ("exp", "iss", "aud", "sub"):
        claims = {k: v for k, v in full.items() if k != missing}
        with pytest.raises(CallError) as refused:
            tokens.verify(jwt.encode(claims, SECRET, algorithm="HS256"))
        assert refused.value.code == "unauthorized"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS"),
        ({"JWT_ALGORITHMS": "HS256,ES256"}, "JWT_ALGORITHMS"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"GUEST_TOKEN_SECRET": "short"}, "GUEST_TOKEN_SECRET"),
        ({"JWT_ALGORITHMS": "RS256"}, "JWT_PUBLIC_KEY"),
        ({"JWT_ALGORITHMS": "RS256", "JWT_PUBLIC_KEY": "not a key"}, "JWT_PUBLIC_KEY"),
    ],
)
def test_weak_identity_settings_stop_the_gateway(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as refused:
        GatewaySettings.from_env({"JWT_SECRET": SECRET, **env})
    assert variable in str(refused.value)
    assert "short" not in str(refused.value) and "not a key" not in str(refused.value)


def test_rs256_settings_accept_a_public_key_only() -> None:
    private, pem = _rsa_pair()
    ok = GatewaySettings.from_env({"JWT_ALGORITHMS": "HS256, RS256", "JWT_PUBLIC_KEY": pem})
    assert ok.algorithms() == ["HS256", "RS256"]
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY"):
        GatewaySettings.from_env({"JWT_ALGORITHMS": "RS256", "JWT_PUBLIC_KEY": private_pem})


def test_guest_tokens_have_their_own_key() -> None:
    """The guest key is derived from JWT_SECRET, never JWT_SECRET itself: a token signed
    with the users' secret cannot pass as a guest's."""
    tokens = TokenService(settings())
    now = int(time.time())
    forged = jwt.encode(
        {
            "sub": "guest-x",
            "kind": "guest",
            "conv": "grp-1",
            "iss": GUEST_ISSUER,
            "aud": GUEST_AUDIENCE,
            "exp": now + 60,
        },
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(CallError, match="signature"):
        tokens.verify(forged)
    genuine, _ = tokens.issue_guest_token("grp-1", "Gus", "en")
    assert tokens.verify(genuine).conversation_id == "grp-1"


def test_display_names_from_tokens_are_printable_and_short() -> None:
    who = TokenService(settings()).verify(user_token(name="\x1b[31mEve\x00" + "x" * 200))
    assert who.display_name.startswith("[31mEve") and len(who.display_name) <= 100
    assert not any(ord(c) < 32 for c in who.display_name)
