import pytest

from media_node.settings import MediaNodeSettings
from schemas import subjects
from schemas.errors import SettingsError
from schemas.ids import InvalidId


def test_media_node_settings_come_from_the_environment() -> None:
    settings = MediaNodeSettings.from_env(
        {
            "MEDIA_NODE_VAD": "energy",
            "MEDIA_NODE_KEYFRAME_INTERVAL_S": "0.5",
            "MEDIA_NODE_MAX_PARTICIPANTS": "12",
        }
    )
    assert settings.media_node_vad == "energy"
    assert settings.media_node_keyframe_interval_s == 0.5
    assert settings.media_node_max_participants == 12
    assert MediaNodeSettings.from_env({}).media_node_vad == "silero"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("MEDIA_NODE_VAD", "webrtc"),
        ("MEDIA_NODE_TAP_THREADS", "0"),
        ("MEDIA_NODE_REPORT_INTERVAL_S", "-1"),
    ],
)
def test_bad_media_node_settings_are_named(var: str, value: str) -> None:
    with pytest.raises(SettingsError, match=var):
        MediaNodeSettings.from_env({var: value})


def test_audio_chunk_subjects() -> None:
    assert subjects.audio_chunks_of("c1") == "audio.chunk.c1.*"
    assert subjects.media_rpc("node-1", "answer_subscription") == (
        "media.rpc.node-1.answer_subscription"
    )
    with pytest.raises(InvalidId):
        subjects.audio_chunks_of("a.b")


def test_the_longest_utterance_fits_in_one_nats_message() -> None:
    """A chunk of the longest utterance allowed is one message under NATS's default 1 MiB
    ``max_payload``; a longer limit is refused at start, naming the variable."""
    from datetime import UTC, datetime

    from schemas.codec import encode
    from schemas.media import AudioChunk

    limit = MediaNodeSettings.from_env({"MEDIA_NODE_UTTERANCE_MAX_S": "20"})
    seconds = limit.media_node_utterance_max_s
    chunk = AudioChunk(
        call_id="c" * 64,
        participant_id="p" * 64,
        utterance_id="u" * 64,
        sequence=10_000,
        is_final=True,
        start_s=1e6,
        end_s=1e6 + seconds,
        started_at=datetime.now(UTC),
        speech_end_s=1e6 + seconds,
        pcm=b"\x7f" * int(seconds * 16000 * 2),
    )
    assert len(encode(chunk)) < 1024 * 1024 - 4096  # room for headers (trace context)
    with pytest.raises(SettingsError, match="MEDIA_NODE_UTTERANCE_MAX_S"):
        MediaNodeSettings.from_env({"MEDIA_NODE_UTTERANCE_MAX_S": "24"})
