"""MediaNode settings, read once from the environment."""

from typing import Annotated, Literal

import msgspec

from schemas.settings import PositiveFloat, ServiceSettings


class MediaNodeSettings(ServiceSettings, frozen=True, kw_only=True):
    """Settings of one media node instance."""

    #: Address browsers reach this node at, announced in its ICE host candidates (like
    #: mediasoup's ``announcedIp``); empty: the node's own interface addresses.
    media_node_public_ip: Annotated[
        str, msgspec.Meta(pattern=r"^$|^[0-9.]+$|^[0-9A-Fa-f:]+$", max_length=45)
    ] = ""
    #: Most participants this node accepts before placement must pick another node.
    media_node_max_participants: Annotated[int, msgspec.Meta(ge=1)] = 50
    #: Comma-separated STUN URLs for the node's own server-reflexive candidates (behind NAT
    #: without a known public address). Empty: host candidates only, no third party asked.
    media_node_stun_urls: str = ""
    #: Load report on ``media.node.heartbeat`` every this many seconds.
    media_node_report_interval_s: PositiveFloat = 2.0
    #: Fewest seconds between two keyframe requests to one publisher.
    media_node_keyframe_interval_s: PositiveFloat = 0.3
    #: Longest a missing video packet may block a publisher's stream before the node drops
    #: the damaged frame and asks for a keyframe (its retransmission was lost too).
    media_node_max_hole_s: PositiveFloat = 0.5
    #: Voice activity detector of the transcription tap.
    media_node_vad: Literal["silero", "energy"] = "silero"
    #: Threads decoding tapped audio (shared by every tapped participant).
    media_node_tap_threads: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    #: Opus packets (20 ms each) a tap may queue before it drops audio.
    media_node_tap_queue_packets: Annotated[int, msgspec.Meta(ge=10)] = 250
    #: Encoded video frames queued per subscriber before the node drops to the next keyframe.
    media_node_video_queue_frames: Annotated[int, msgspec.Meta(ge=2)] = 64
    #: How often the active speaker of each call is re-evaluated.
    media_node_speaker_interval_s: PositiveFloat = 0.1
    #: Silence that ends an utterance; speech resuming before it continues the same one.
    media_node_utterance_min_silence_s: PositiveFloat = 0.6
    #: First pause after which the utterance so far is sent as final (captions need not
    #: wait for the whole end-of-utterance silence; a continuation replaces it).
    media_node_utterance_pause_s: PositiveFloat = 0.2
    #: During speech, the utterance so far is sent (interim captions) after this much new
    #: speech.
    media_node_utterance_interim_s: PositiveFloat = 1.0
    #: Longest utterance: a final chunk is cut there and a new utterance begins.
    media_node_utterance_max_s: Annotated[float, msgspec.Meta(gt=1, le=25)] = 15.0
