"""Captions through real gateways, without speech: transcription on/off and languages seen by
everyone, a P2P browser's own transcript translated by the real bridge and Apertium APy and
delivered to each socket only in the language its participant reads, bad requests refused.

Real parts: two gateway processes, the translator bridge process, Apertium APy (Debian),
nats-server. The speech-to-text path (media node, transcribers) is in
``test_captions_calls.py``.
"""

import asyncio
import json
from collections.abc import Iterator

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.captions import Caption, TranscriptSegment
from tests.support.call_client import CallClient, Payload
from tests.support.captions import ApyServer, ServiceProcess
from tests.support.gateways import GatewayCluster
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector

EN = "Good morning everyone, thank you for joining the call."
EN_2 = "The new version will be ready next week."
EN_3 = "We need to finish the report by Friday."


@pytest.fixture(scope="module")
def cluster(nats_server: NatsServer) -> Iterator[GatewayCluster]:
    gateways = GatewayCluster(
        nats_server.url, count=2, env={"RATE_TRANSCRIPT_PER_S": "2", "RATE_TRANSCRIPT_BURST": "10"}
    ).start()
    yield gateways
    broken = {g.service_id: g.log_text() for g in gateways.gateways if "Traceback" in g.log_text()}
    gateways.stop()
    assert not broken, next(iter(broken.values()))[-4000:]


@pytest.fixture(scope="module")
def bridge(nats_server: NatsServer, apertium: ApyServer) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(
        "translator_bridge",
        {
            "NATS_URL": nats_server.url,
            "SERVICE_ID": "bridge-gw-captions",
            "HEARTBEAT_INTERVAL_S": "0.5",
            "TRANSLATOR_URL": apertium.url,
        },
    ).start()
    yield proc
    assert proc.stop() == 0
    assert not any("Traceback" in line for line in proc.lines)


async def three_people(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> tuple[CallClient, CallClient, CallClient, str]:
    """Alice (en, gateway 0) starts a GROUP call; Bruno (es, gateway 1) and Chloé (fr,
    gateway 0) join, each with their own token language. No selector runs: it stays P2P."""
    users = {"alice": "en", "bruno": "es", "chloe": "fr"}
    conv = f"capt-{uid}"
    cluster.put_conversation(conv, "GROUP", [f"{u}-{uid}" for u in users])
    made = []
    for i, (name, lang) in enumerate(users.items()):
        token = cluster.token(f"{name}-{uid}", name, lang)
        url = cluster.urls[i % 2] if name != "chloe" else cluster.urls[0]
        made.append(await CallClient.connect(url, token, name=name, media=False))
    clients += made
    a, b, c = made
    call_id = (await a.initiate(conv))["call"]["callId"]
    await b.join(call_id)
    await c.join(call_id)
    for x in (a, b):
        await x.wait_for("call:participant-joined", lambda e: e["activeCount"] == 3)
    return a, b, c, call_id


def finals(client: CallClient, utterance: str) -> list[Payload]:
    return [c for c in client.captions() if c["utteranceId"] == utterance and c["isFinal"]]


async def test_transcription_and_languages_are_seen_by_everyone(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    a, b, c, call_id = await three_people(cluster, uid, clients)
    joined = await c.wait_for("call:joined")
    view = {p["participantId"]: p for p in joined["call"]["participants"]}
    assert view[c.participant_id]["language"] == "fr"
    assert view[c.participant_id]["captionLanguage"] == "fr"
    assert joined["call"]["transcription"] is False

    assert (await b.set_transcription(True))["enabled"] is True
    for x in (a, b, c):
        seen = await x.wait_for("call:transcription-changed")
        assert seen == {"callId": call_id, "enabled": True, "by": b.participant_id}
    assert (await a.set_transcription(True))["ok"]  # already on: no second notice
    ack = await c.set_language(caption_language="es")
    assert ack["language"] == "fr" and ack["captionLanguage"] == "es"
    for x in (a, b, c):
        seen = await x.wait_for("call:participant-language")
        assert seen["participantId"] == c.participant_id
        assert (seen["language"], seen["captionLanguage"]) == ("fr", "es")

    await a.set_transcription(False)
    for x in (a, b, c):
        assert (await x.wait_for("call:transcription-changed"))["enabled"] is False
        assert len(x.seen("call:transcription-changed")) == 2


async def test_a_browser_transcript_reaches_each_reader_in_their_language_only(
    *,
    cluster: GatewayCluster,
    bridge: ServiceProcess,
    apertium: ApyServer,
    bus: Bus,
    uid: str,
    clients: list[CallClient],
) -> None:
    a, b, c, call_id = await three_people(cluster, uid, clients)
    segments: Collector[TranscriptSegment] = Collector()
    published: Collector[Caption] = Collector()
    await bus.subscribe(subjects.transcript_segment(call_id), TranscriptSegment, segments)
    await bus.subscribe(subjects.captions_of(call_id), Caption, published)
    await bus.flush()

    async def all_published(utterance: str, languages: set[str]) -> None:
        """Every caption of ``utterance``'s final is on the bus (so it reached the gateways
        before anything the bridge publishes later: one publisher, in order)."""
        await published.wait(
            lambda cs: (
                {c.language for c in cs if c.utterance_id == utterance and c.is_final} >= languages
            ),
            20,
        )

    await a.set_transcription(True)
    for x in (a, b, c):
        await x.wait_for("call:transcription-changed")

    # An interim result, then the final: both published as client segments, in order.
    partial = await a.transcribe("u1", "Good morning everyone", is_final=False)
    assert partial["published"] and partial["revision"] == 0
    final = await a.transcribe("u1", EN, is_final=True)
    assert final["published"] and final["revision"] == 1
    utterance = final["utteranceId"]
    assert utterance == f"{a.participant_id}-u1"

    es = await b.wait_caption(lambda x: x["utteranceId"] == utterance and x["isFinal"])
    fr = await c.wait_caption(lambda x: x["utteranceId"] == utterance and x["isFinal"])
    own = await a.wait_caption(lambda x: x["utteranceId"] == utterance and x["isFinal"])
    assert es["language"] == "es" and es["translated"] and es["revision"] == 1
    assert es["text"] == apertium.translate(EN, ["eng", "spa"])
    assert fr["language"] == "fr" and fr["text"] == apertium.translate(EN, ["eng", "spa", "fra"])
    assert own["language"] == "en" and own["text"] == EN and not own["translated"]
    assert own["untranslatedReason"] == "same_language"
    for caption in (es, fr, own):
        assert caption["speakerParticipantId"] == a.participant_id
        assert (caption["sourceLanguage"], caption["sourceText"]) == ("en", EN)

    await segments.wait(lambda s: len(s) >= 2, 10)
    assert [(s.revision, s.is_final, s.source) for s in segments.items] == [
        (0, False, "client"),
        (1, True, "client"),
    ]
    assert segments.items[1].utterance_id == utterance and segments.items[1].model == "browser"
    assert segments.items[1].participant_id == a.participant_id

    # A repeated revision is not published again (nor is a lower one).
    again = await a.transcribe("u1", EN, revision=1)
    assert again["published"] is False
    await all_published(utterance, {"en", "es", "fr"})

    # Bruno switches to French mid-call: the next utterance reaches him in French. Alice
    # (who speaks English) asks to read Spanish: she still sees her own words, in English.
    assert (await b.set_language(caption_language="fr"))["captionLanguage"] == "fr"
    await a.set_language(caption_language="es")
    second = (await a.transcribe("u2", EN_2))["utteranceId"]
    now_fr = await b.wait_caption(lambda x: x["utteranceId"] == second and x["isFinal"])
    assert now_fr["language"] == "fr"
    assert now_fr["text"] == apertium.translate(EN_2, ["eng", "spa", "fra"])
    own_2 = await a.wait_caption(lambda x: x["utteranceId"] == second)
    assert own_2["language"] == "en" and own_2["text"] == EN_2
    # Only Alice reads Spanish now, and she is the speaker: no Spanish is made for nobody.
    await all_published(second, {"en", "fr"})
    assert not [x for x in published.items if x.utterance_id == second and x.language == "es"]

    # Chloé speaks (her browser recognised French): Alice reads it in Spanish, Bruno in
    # French (the original), Chloé sees her own words.
    fr_text = "Bonjour à tous, merci d'être venus."
    third = (await c.transcribe("u1", fr_text))["utteranceId"]
    assert third == f"{c.participant_id}-u1" != utterance  # ids are per participant
    in_es = await a.wait_caption(lambda x: x["utteranceId"] == third and x["isFinal"])
    assert in_es["language"] == "es" and in_es["sourceLanguage"] == "fr"
    assert in_es["text"] == apertium.translate(fr_text, ["fra", "spa"])
    original = await b.wait_caption(lambda x: x["utteranceId"] == third)
    assert original["text"] == fr_text and not original["translated"]
    await c.wait_caption(lambda x: x["utteranceId"] == third and x["language"] == "fr")

    # Nothing else reached anyone: every caption of the first two utterances was published
    # before the third's, so each gateway has routed them all by now.
    def got(x: CallClient) -> set[tuple[str, str]]:
        return {
            (m["utteranceId"], m["language"]) for m in x.captions() if m["utteranceId"] != third
        }

    assert got(a) == {(utterance, "en"), (second, "en")}  # her own words, never translated
    assert got(b) == {(utterance, "es"), (second, "fr")}
    assert got(c) == {(utterance, "fr"), (second, "fr")}
    # Each revision once per socket (no duplicates reach a screen).
    revisions = [(x["utteranceId"], x["revision"]) for x in b.captions()]
    assert len(revisions) == len(set(revisions))

    # Transcription off: transcripts are refused, nothing more is published.
    await b.set_transcription(False)
    await a.wait_for("call:transcription-changed", lambda e: e["enabled"] is False)
    ack = await a.request(
        "call:transcription",
        {"callId": call_id, "utteranceId": "u9", "text": EN_3, "isFinal": True},
    )
    assert ack["ok"] is False and ack["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    ("event", "data", "code"),
    [
        ("call:set-language", {"language": "xx"}, "bad_request"),
        ("call:set-language", {"captionLanguage": "klingon"}, "bad_request"),
        ("call:set-language", {}, "bad_request"),
        ("call:set-transcription", {"enabled": "yes"}, "bad_request"),
        (
            "call:transcription",
            {"utteranceId": "u", "text": "x" * 2001, "isFinal": True},
            "bad_request",
        ),
        (
            "call:transcription",
            {"utteranceId": "a.b", "text": "hi", "isFinal": True},
            "bad_request",
        ),
        ("call:transcription", {"utteranceId": "u", "text": "hi", "isFinal": True}, "conflict"),
        ("call:captions-uplink", {}, "conflict"),
    ],
)
async def test_bad_caption_requests_get_typed_errors(
    *,
    cluster: GatewayCluster,
    uid: str,
    clients: list[CallClient],
    event: str,
    data: dict[str, object],
    code: str,
) -> None:
    users = [f"a-{uid}", f"b-{uid}"]
    cluster.put_conversation(f"bad-{uid}", "DIRECT", users)
    a = await CallClient.connect(cluster.urls[0], cluster.token(users[0]), name="a", media=False)
    b = await CallClient.connect(cluster.urls[1], cluster.token(users[1]), name="b", media=False)
    clients += [a, b]
    call_id = (await a.initiate(f"bad-{uid}"))["call"]["callId"]
    await b.accept(call_id)
    ack = await a.request(event, {"callId": call_id, **data})
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    assert "Traceback" not in json.dumps(ack) and "klingon" not in ack["error"]["message"]
    await a.wait_for("call:error", lambda e: e["code"] == code and e["event"] == event)
    # Not bound to the call: refused as such; the socket and the call still work.
    assert (await b.request(event, {"callId": "call-elsewhere", **data}))["ok"] is False
    assert (await a.heartbeat())["ok"] is True
    assert (await a.set_transcription(True))["enabled"] is True


async def test_a_joins_languages_are_checked_and_transcripts_are_rate_limited(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    users = [f"a-{uid}", f"b-{uid}"]
    cluster.put_conversation(f"lim-{uid}", "DIRECT", users)
    a = await CallClient.connect(cluster.urls[0], cluster.token(users[0]), name="a", media=False)
    b = await CallClient.connect(cluster.urls[1], cluster.token(users[1]), name="b", media=False)
    clients += [a, b]
    call_id = (await a.initiate(f"lim-{uid}", language="es", caption_language="en"))["callId"]
    refused = await b.request("call:accept", {"callId": call_id, "language": "zz-top"})
    assert refused["ok"] is False and refused["error"]["code"] == "bad_request"
    ack = await b.accept(call_id, language="pt-br")
    me = next(p for p in ack["call"]["participants"] if p["participantId"] == b.participant_id)
    assert (me["language"], me["captionLanguage"]) == ("pt-br", "pt-br")
    alice = next(p for p in ack["call"]["participants"] if p["participantId"] == a.participant_id)
    assert (alice["language"], alice["captionLanguage"]) == ("es", "en")

    await a.set_transcription(True)
    acks = await asyncio.gather(*(a.request("call:transcription", {
        "callId": call_id, "utteranceId": f"r{i}", "text": "hola", "isFinal": True,
    }) for i in range(30)))  # fmt: skip
    limited = [x for x in acks if not x["ok"]]
    assert limited and all(x["error"]["code"] == "rate_limited" for x in limited)
    assert sum(1 for x in acks if x["ok"]) >= 10
    assert (await a.heartbeat())["ok"] is True
