"""A decoder loop's leftover tail is cut; real endings are kept (pure, token ids only)."""

from transcriber.whisper import cut_repeated_tail

#: "Can everyone hear me clearly now? Can everyone hear" as stand-in token ids.
CAN, EVERYONE, HEAR, ME, CLEARLY, NOW, QUESTION = range(1, 8)
SENTENCE = [CAN, EVERYONE, HEAR, ME, CLEARLY, NOW, QUESTION]


def test_a_restarted_sentence_is_cut_at_the_restart() -> None:
    looped = [*SENTENCE, CAN, EVERYONE, HEAR]
    assert cut_repeated_tail(looped, truncated=False) == SENTENCE
    assert cut_repeated_tail([*SENTENCE, *SENTENCE, CAN], truncated=True) == SENTENCE


def test_a_two_token_tail_is_a_loop_only_when_the_budget_ran_out() -> None:
    tail = [*SENTENCE, CAN, EVERYONE]
    assert cut_repeated_tail(tail, truncated=True) == SENTENCE
    assert cut_repeated_tail(tail, truncated=False) == tail


def test_text_without_a_repeated_tail_is_untouched() -> None:
    assert cut_repeated_tail(SENTENCE, truncated=True) == SENTENCE
    # A word repeated inside the sentence, or once at its end, is speech, not a loop.
    assert cut_repeated_tail([ME, NOW, ME], truncated=True) == [ME, NOW, ME]
    assert cut_repeated_tail([CAN, HEAR, HEAR], truncated=True) == [CAN, HEAR, HEAR]
    assert cut_repeated_tail([], truncated=True) == []
