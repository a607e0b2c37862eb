"""Who each session sees and hears: pins, last-N, stable slots, audio hysteresis, leases."""

from media_node.leases import LeaseBook
from media_node.selector import AudioSelector, Candidate, SpeakerHistory, place, wanted_video


def people(n: int) -> list[Candidate]:
    return [Candidate(participant_id=f"p{i}", joined=i, video=True, audio=True) for i in range(n)]


def test_pins_come_first_then_recent_speakers_then_join_order_never_oneself() -> None:
    everyone = people(12)
    want = wanted_video(
        "p0", everyone, pinned=["p11", "p0"], tiles=4, speakers=["p7", "p3"], holding=[]
    )
    assert want == ["p11", "p7", "p3", "p1"]
    assert wanted_video("p0", everyone, pinned=[], tiles=0, speakers=[], holding=[]) == []
    no_video = [Candidate(participant_id="p1", joined=1, video=False, audio=True)]
    assert wanted_video("p0", no_video, pinned=["p1"], tiles=3, speakers=[], holding=[]) == []


def test_current_holders_keep_their_slots_over_later_joiners() -> None:
    everyone = people(12)
    want = wanted_video("p0", everyone, pinned=[], tiles=3, speakers=[], holding=["p9", None, "p5"])
    assert want == ["p9", "p5", "p1"]


def test_place_moves_as_few_participants_as_possible() -> None:
    assert place(["a", "b", "c"], ["d", "a", "c"]) == ["a", "d", "c"]
    assert place([None, None], ["x"]) == ["x", None]
    assert place(["a", "b"], []) == [None, None]


def test_a_speaker_moves_to_the_front_after_speaking_long_enough() -> None:
    history = SpeakerHistory(speech_dbov=-50, speak_after_s=0.1)
    assert not history.update({"a": -20.0, "b": -90.0}, now=0.0)
    assert history.update({"a": -20.0, "b": -90.0}, now=0.15)
    assert history.order == ["a"]
    history.update({"a": -90.0, "b": -25.0}, now=0.2)
    assert history.update({"a": -90.0, "b": -25.0}, now=0.31)
    assert history.order == ["b", "a"]
    history.update({"c": -25.0}, now=0.4)
    history.update({"c": -90.0}, now=0.45)  # a blip shorter than speak_after_s
    assert history.order == ["b", "a"]
    history.remove("b")
    assert history.order == ["a"]


def test_two_speaking_at_once_put_the_louder_first_and_stop_changing() -> None:
    history = SpeakerHistory(speech_dbov=-50, speak_after_s=0.1)
    history.update({"a": -20.0, "b": -45.0}, now=0.0)
    assert history.update({"a": -20.0, "b": -45.0}, now=0.15)
    assert history.order == ["a", "b"]
    for tick in range(1, 10):  # both still talking: nothing changes
        assert not history.update({"a": -20.0, "b": -45.0}, now=0.15 + tick * 0.05)
    assert history.update({"a": -48.0, "b": -20.0}, now=1.0)  # b is now the louder
    assert history.order == ["b", "a"]


def test_audio_slots_keep_a_speaker_until_it_has_been_quiet_a_while() -> None:
    audio = AudioSelector(speech_dbov=-50, displace_after_s=0.3)
    everyone = people(5)
    audio.update({"p1": -20.0, "p2": -20.0}, now=0.0)
    slots = audio.select("p0", everyone, [None, None], now=0.0)
    assert set(slots) == {"p1", "p2"}
    audio.update({"p3": -20.0, "p2": -20.0}, now=0.1)
    # p1 went quiet only 0.1 s ago: p3 waits.
    assert audio.select("p0", everyone, slots, now=0.1) == slots
    audio.update({"p3": -20.0, "p2": -20.0}, now=0.5)
    after = audio.select("p0", everyone, slots, now=0.5)
    assert set(after) == {"p2", "p3"} and after[slots.index("p2")] == "p2"
    assert "p0" not in audio.select("p0", everyone, [None, None, None, None], now=0.5)


def test_leases_expire_unless_renewed() -> None:
    leases = LeaseBook()
    leases.grant("s1", 10.0, now=0.0)
    leases.grant("s2", 10.0, now=0.0)
    assert leases.renew("s1", now=8.0)
    assert not leases.renew("nope", now=8.0)
    assert leases.expired(now=11.0) == ["s2"]
    assert leases.renew("s1", now=9.0, lease_s=60.0)
    assert leases.expired(now=20.0) == ["s2"]
    leases.drop("s2")
    assert leases.expired(now=100.0) == ["s1"] and len(leases) == 1
