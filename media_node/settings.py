"""MediaNode settings, read once from the environment."""

import ipaddress
from typing import Annotated, Literal

import msgspec

from schemas.media import MAX_AUDIO_SLOTS, MAX_VIDEO_SLOTS
from schemas.settings import PositiveFloat, ServiceSettings


class MediaNodeSettings(ServiceSettings, frozen=True, kw_only=True):
    """Settings of one media node instance."""

    def ice_addresses(self) -> list[str]:
        """The configured ICE bind addresses (``ValueError`` for one that is no IP)."""
        out = [a.strip() for a in self.media_node_ice_addresses.split(",") if a.strip()]
        for address in out:
            ipaddress.ip_address(address)
        return out

    #: Address browsers reach this node at, announced in its ICE host candidates (like
    #: mediasoup's ``announcedIp``); empty: the node's own interface addresses.
    media_node_public_ip: Annotated[
        str, msgspec.Meta(pattern=r"^$|^[0-9.]+$|^[0-9A-Fa-f:]+$", max_length=45)
    ] = ""
    #: Comma-separated local addresses the node's ICE sockets bind to (its host
    #: candidates), e.g. ``127.0.0.1`` for the embedded stack. Empty: every interface
    #: address except loopback (aioice's choice).
    media_node_ice_addresses: Annotated[
        str, msgspec.Meta(pattern=r"^$|^[0-9A-Fa-f.:]+(\s*,\s*[0-9A-Fa-f.:]+)*$", max_length=512)
    ] = ""
    #: Most sessions (participants) this node accepts before placement must pick another.
    media_node_max_participants: Annotated[int, msgspec.Meta(ge=1)] = 50
    #: Slots of a downlink when ``open_session`` does not say: video (the tiles a client
    #: can show at once, last-N) and audio (the loudest speakers heard at once).
    media_node_video_slots: Annotated[int, msgspec.Meta(ge=0, le=MAX_VIDEO_SLOTS)] = 9
    media_node_audio_slots: Annotated[int, msgspec.Meta(ge=0, le=MAX_AUDIO_SLOTS)] = 3
    #: Comma-separated STUN URLs for the node's own server-reflexive candidates (behind NAT
    #: without a known public address). Empty: host candidates only, no third party asked.
    media_node_stun_urls: str = ""
    #: Load report on ``media.node.heartbeat`` every this many seconds.
    media_node_report_interval_s: PositiveFloat = 2.0
    #: Fewest seconds between two keyframe requests to one publisher. When a call migrates
    #: to the SFU every subscriber needs a keyframe of every publisher within a few hundred
    #: milliseconds; a 0.3 s spacing added ~0.25 s to the last of them (bench/migration.py).
    media_node_keyframe_interval_s: PositiveFloat = 0.1
    #: Longest a missing video packet may hold a publisher's stream before the node gives
    #: up on it (its retransmissions were lost too), skips it and asks for a keyframe.
    media_node_max_hole_s: PositiveFloat = 0.5
    #: Seconds between two NACKs of the same missing packet toward a publisher.
    media_node_nack_retry_s: PositiveFloat = 0.1
    #: Packets of each video slot kept to answer subscribers' NACKs (about 2-4 s of HD).
    media_node_nack_history_packets: Annotated[int, msgspec.Meta(ge=16, le=8192)] = 512
    #: The REMB the node sends publishers: the most video bitrate it asks them for.
    media_node_uplink_video_bps: Annotated[int, msgspec.Meta(ge=50_000)] = 1_500_000
    #: Mean seconds between two RTCP reports (SR on downlinks, RR + REMB on uplinks).
    media_node_rtcp_interval_s: PositiveFloat = 1.0
    #: Deadline of each aiortc negotiation step (``unavailable`` when it passes), and of a
    #: leg's connection after its SDP exchange (the leg is failed and closed).
    media_node_negotiation_timeout_s: PositiveFloat = 10.0
    media_node_connect_timeout_s: PositiveFloat = 20.0
    #: A participant whose level stays above the speech threshold this long moves to the
    #: front of the last-N order (video slots follow it).
    media_node_speak_after_s: PositiveFloat = 0.1
    #: An audio slot's speaker quiet this long may be replaced by a newer speaker.
    media_node_audio_displace_s: PositiveFloat = 0.3
    #: A publisher nobody receives is told to pause its video after this long.
    media_node_demand_hold_s: PositiveFloat = 2.0
    #: How often each call's speakers, last-N and audio slots are re-evaluated.
    media_node_speaker_interval_s: PositiveFloat = 0.05
    #: How often expired session leases are swept.
    media_node_lease_sweep_s: PositiveFloat = 0.5
    #: Voice activity detector of the transcription tap.
    media_node_vad: Literal["silero", "energy"] = "silero"
    #: Threads decoding tapped audio (shared by every tapped participant).
    media_node_tap_threads: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    #: Opus packets (20 ms each) a tap may queue before it drops audio.
    media_node_tap_queue_packets: Annotated[int, msgspec.Meta(ge=10)] = 250
    #: Silence that ends an utterance; speech resuming before it continues the same one.
    media_node_utterance_min_silence_s: PositiveFloat = 0.6
    #: First pause after which the utterance so far is sent as final (captions need not
    #: wait for the whole end-of-utterance silence; a continuation replaces it).
    media_node_utterance_pause_s: PositiveFloat = 0.2
    #: During speech, the utterance so far is sent (interim captions) after this much new
    #: speech.
    media_node_utterance_interim_s: PositiveFloat = 1.0
    #: Longest utterance: a final chunk is cut there and a new utterance begins. At most
    #: 20 s because a chunk is one NATS message: 16 kHz s16le PCM is 32,000 bytes a second,
    #: base64 in JSON makes that 42,667, so 20 s is ~853 KB and fits NATS's default 1 MiB
    #: ``max_payload`` with room for the other fields and headers (25 s did not: ~1.07 MB,
    #: and every such chunk failed to publish).
    media_node_utterance_max_s: Annotated[float, msgspec.Meta(gt=1, le=20)] = 15.0
