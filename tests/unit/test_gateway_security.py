"""Hostile input refused by kind, and the gateway's access plumbing (no network).

Property-based (hypothesis): every socket request type and every bus message type, fed
random and mutated payloads, either decodes or raises its typed error (``CallError`` /
``msgspec`` errors), never anything else. Then the kinds of defect found from outside:
text that cannot be encoded (half an emoji), reserved event names, bodies of any size,
client addresses behind proxies, origins, expiring tokens, short-lived TURN credentials,
production mode's refusals.
"""

import contextlib
import inspect
import json
import time
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import app as gateway_app
from gateway.client_address import ClientAddress
from gateway.cors import OriginPolicy
from gateway.errors import CallError
from gateway.health import Readiness
from gateway.ice import ice_servers
from gateway.settings import GatewaySettings
from gateway.sockets import requests as socket_requests
from gateway.sockets.server import RESERVED_EVENTS
from gateway.tokens import TokenService
from gateway.validation import check_candidate, check_display_name, check_sdp, check_text
from schemas.catalogue import FAMILIES
from schemas.codec import encode
from schemas.errors import SettingsError
from schemas.secret_policy import DEV_JWT_SECRET, weakness
from tests.support.samples import samples

SECRET = "unit-test-secret-unit-test-secret-32"
HALF_EMOJI = "\ud83d"  # what "😀".slice(0, 1) sends from JavaScript, as JSON "\ud83d"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
REQUEST_TYPES = [
    t
    for _, t in inspect.getmembers(socket_requests, inspect.isclass)
    if issubclass(t, socket_requests.Request) and t is not socket_requests.Request
]
FIELD_NAMES = sorted({f.encode_name for t in REQUEST_TYPES for f in msgspec.structs.fields(t)})


def gw_settings(**kw: Any) -> GatewaySettings:
    return GatewaySettings(jwt_secret=SECRET, **kw)


# --- property-based: socket requests and bus messages ---------------------------------------


@pytest.mark.parametrize("request_type", REQUEST_TYPES, ids=lambda t: t.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.one_of(
        json_values,
        st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6),
    )
)
def test_every_socket_request_decodes_or_is_a_typed_refusal(
    request_type: type[Any], payload: object
) -> None:
    try:
        check_text(payload)
        socket_requests.decode(payload, request_type)
    except CallError as err:
        assert err.code == "bad_request"


@given(text=st.text(min_size=0, max_size=8), where=st.integers(min_value=0, max_value=8))
def test_text_with_an_unpaired_surrogate_is_refused_anywhere_in_a_payload(
    text: str, where: int
) -> None:
    cut = text[:where] + HALF_EMOJI + text[where:]
    for payload in ({"sdp": cut}, {"a": [{"b": cut}]}, {cut: 1}, [cut]):
        with pytest.raises(CallError) as caught:
            check_text(payload)
        assert caught.value.code == "bad_request"
    check_text({"ok": text, "emoji": "😀"})  # whole characters pass


def test_deeply_nested_payloads_are_refused() -> None:
    deep: object = "x"
    for _ in range(40):
        deep = [deep]
    with pytest.raises(CallError, match="nested too deeply"):
        check_text({"a": deep})


MEMBERS = [(f.name, m) for f in FAMILIES for m in f.members]


@pytest.mark.parametrize(("family", "member"), MEMBERS, ids=lambda x: getattr(x, "__name__", x))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_bus_message_type_refuses_mutated_payloads_with_a_typed_error(
    family: str, member: type[msgspec.Struct], data: st.DataObject
) -> None:
    union = next(f.union for f in FAMILIES if f.name == family)
    decoder = msgspec.json.Decoder(union)
    sample = next((s for s in samples() if type(s) is member), None)
    base: dict[str, Any] = (
        json.loads(encode(sample)) if sample is not None else {"type": member.__name__}
    )
    mutated = dict(base)
    replace: bool = data.draw(st.booleans())
    if mutated and replace:
        key = data.draw(st.sampled_from(sorted(mutated)))
        mutated[key] = data.draw(json_values)
    else:
        mutated[data.draw(st.text(max_size=8))] = data.draw(json_values)
    raw = json.dumps(mutated).encode()
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
        raw = raw[:cut] + data.draw(st.binary(max_size=8))
    with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
        decoder.decode(raw)  # anything else (a crash of the decoder) fails the test


# --- encodable text in claims, resume tokens, SDP, candidates ------------------------------


def token(**claims: object) -> str:
    body = {"sub": "alice", "iss": "meeshy", "aud": "meeshy-calls", "exp": int(time.time()) + 60}
    body.update(claims)
    return jwt.encode(body, SECRET, algorithm="HS256")


def test_claims_with_half_an_emoji_refuse_the_token_not_a_500() -> None:
    tokens = TokenService(gw_settings())
    with pytest.raises(CallError) as caught:
        tokens.verify(token(name="Zoé" + HALF_EMOJI))
    assert caught.value.code == "unauthorized"
    with pytest.raises(CallError) as caught:
        tokens.verify(token() + "é")
    assert caught.value.code == "unauthorized"
    with pytest.raises(CallError, match="token"):
        tokens.verify(jwt.encode({"sub": "a", "iss": "meeshy", "aud": "meeshy-calls"}, SECRET))


def test_resume_tokens_sdp_candidates_and_names_with_bad_text_are_bad_requests() -> None:
    with pytest.raises(CallError) as caught:
        socket_requests.decode(
            {"callId": "c1", "resumeToken": "abc" * 8 + HALF_EMOJI}, socket_requests.JoinRequest
        )
    assert caught.value.code == "bad_request"
    sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=" + HALF_EMOJI + "\r\n"
    for check in (
        lambda: check_sdp(sdp, 32 * 1024),
        lambda: check_candidate({"candidate": "candidate:" + HALF_EMOJI}, 1024),
        lambda: check_display_name("Gus" + HALF_EMOJI),
    ):
        with pytest.raises(CallError) as caught:
            check()
        assert caught.value.code == "bad_request"


def test_socketio_lifecycle_names_are_reserved() -> None:
    assert {"connect", "disconnect", "connect_error", "disconnecting", "message"} <= RESERVED_EVENTS


# --- REST bodies: capped, encodable --------------------------------------------------------


async def test_rest_bodies_are_capped_and_bad_text_is_a_422_before_any_route() -> None:
    app = gateway_app.create_app(Readiness(), "gw-test", gw_settings(max_request_bytes=4096))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        big = await client.post("/api/guests", content=b"x" * 5000)
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"

        async def chunks() -> Any:  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b"y" * 1000

        streamed = await client.post("/api/guests", content=chunks())
        assert streamed.status_code == 413
        bad = await client.post(
            "/api/guests",
            content=b'{"link": "x", "displayName": "Gus\\ud83d", "language": "en"}',
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_request"
        # A fine body reaches the route (which answers 503: no bus in this test).
        fine = await client.post(
            "/api/guests",
            json={"link": "x", "displayName": "Gus 😀", "language": "en"},
        )
        assert fine.status_code not in (413, 422, 500)


# --- client addresses, origins -------------------------------------------------------------


def test_the_client_behind_trusted_proxies_is_the_rightmost_untrusted_hop() -> None:
    plain = ClientAddress(())
    assert plain.resolve("10.0.0.5", "1.2.3.4") == "10.0.0.5"  # no proxy trusted: ignored
    proxied = ClientAddress(
        gw_settings(trusted_proxies="10.0.0.0/24, 192.168.1.1").proxy_networks()
    )
    assert proxied.resolve("10.0.0.5", "1.2.3.4") == "1.2.3.4"
    # A client writing its own header cannot pick its bucket: the right-most untrusted wins.
    assert proxied.resolve("10.0.0.5", "6.6.6.6, 1.2.3.4, 192.168.1.1") == "1.2.3.4"
    assert proxied.resolve("8.8.8.8", "1.2.3.4") == "8.8.8.8"  # not from our proxy
    assert proxied.resolve("10.0.0.5", "garbage") == "10.0.0.5"
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        GatewaySettings.from_env({"JWT_SECRET": SECRET, "TRUSTED_PROXIES": "not-an-ip"})


def test_rate_buckets_are_ipv4_addresses_and_ipv6_slash_64s() -> None:
    """A host handed an IPv6 /64 can use a new address for every connect: its whole /64 is
    one bucket. IPv4 (also IPv4-mapped IPv6) stays one address per bucket."""
    plain = ClientAddress(())
    assert plain.bucket("2001:db8:1:2:aaaa::1", None) == "2001:db8:1:2::/64"
    assert plain.bucket("2001:db8:1:2:bbbb::9", None) == plain.bucket("2001:db8:1:2::7", None)
    assert plain.bucket("2001:db8:1:3::1", None) != plain.bucket("2001:db8:1:2::1", None)
    assert plain.bucket("1.2.3.4", None) == "1.2.3.4"
    assert plain.bucket("1.2.3.4:5555", None) == "1.2.3.4"  # a port is not a new client
    assert plain.bucket("::ffff:1.2.3.4", None) == "1.2.3.4"
    assert plain.bucket(None, None) == "-"
    proxied = ClientAddress(gw_settings(trusted_proxies="10.0.0.0/24").proxy_networks())
    assert proxied.bucket("10.0.0.5", "2001:db8:9:9::5") == "2001:db8:9:9::/64"


def test_cors_is_same_origin_by_default() -> None:
    default = OriginPolicy(gw_settings())
    environ = {"HTTP_HOST": "calls.example.com"}
    assert default.allows("https://calls.example.com", environ)
    assert not default.allows("https://evil.example.net", environ)
    assert default.allows(None, environ)  # not a browser page
    listed = OriginPolicy(gw_settings(cors_origins="https://app.example.com/"))
    assert listed.allows("https://app.example.com", {})
    assert not listed.allows("https://evil.example.net", {})


# --- expiring tokens, short-lived TURN -----------------------------------------------------


def test_principals_carry_their_expiry_and_turn_credentials_never_outlive_them() -> None:
    tokens = TokenService(gw_settings())
    now = time.time()
    who = tokens.verify(token(exp=int(now) + 120))
    assert who.expires_at == int(now) + 120
    assert not who.expired(now) and who.expired(now + 3600)
    cfg = ice_servers(
        gw_settings(turn_urls="turn:t:3478", turn_secret="s3cret"),
        call_id="c1",
        participant_id="p1",
        not_after=who.expires_at,
        now=now,
    )
    assert cfg["ttlS"] <= 120 and cfg["expiresAt"] <= int(now) + 120
    assert cfg["iceServers"][0]["username"].endswith(":c1.p1")
    assert gw_settings().turn_ttl_s == 600.0


# --- production mode -----------------------------------------------------------------------


def test_production_mode_refuses_weak_and_default_secrets_without_printing_them() -> None:
    env = {
        "PRODUCTION_MODE": "true",
        "JWT_SECRET": DEV_JWT_SECRET,
        "OPERATOR_TOKEN": "short",
        "CORS_ORIGINS": "*",
        "TURN_URLS": "turn:t:3478",
        "TURN_SECRET": "changeme-changeme-changeme",
        "NATS_PASSWORD": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    }
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_env(env)
    message = str(caught.value)
    for variable in (
        "JWT_SECRET",
        "GUEST_TOKEN_SECRET",
        "OPERATOR_TOKEN",
        "CORS_ORIGINS",
        "TURN_SECRET",
        "NATS_USER",
        "NATS_PASSWORD",
    ):
        assert variable in message
    for value in (DEV_JWT_SECRET, "changeme-changeme", "aaaaaaaa"):
        assert value not in message
    strong = {
        "PRODUCTION_MODE": "true",
        "JWT_SECRET": "Q7f!x2Lr9#vB0mZp4Tq8Wk1Yh6Nd3Sj5",
        "GUEST_TOKEN_SECRET": "gT4#pL8wQ2zX6vB0nM3kR7yH1jD5sF9c",
        "NATS_USER": "gateway",
        "NATS_PASSWORD": "Hn3Kq8Zt1Vw5Xb7Mc2Lr9Jp4Fd6Gs0Ya",
    }
    assert GatewaySettings.from_env(strong).production_mode
    assert GatewaySettings.from_env({"JWT_SECRET": DEV_JWT_SECRET}).production_mode is False


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        (None, True),
        ("", True),
        ("test-operator-token", True),
        ("my-placeholder-value-that-is-long", True),
        ("Ab1!Ab1!", True),
        ("abababababababababababababab", True),
        ("Hn3Kq8Zt1Vw5Xb7Mc2Lr9Jp4Fd6Gs0Ya", False),
    ],
)
def test_what_counts_as_a_weak_secret(value: str | None, refused: bool) -> None:
    assert (weakness(value) is not None) == refused
