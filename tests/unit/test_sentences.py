"""Replies end on a sentence boundary (llm_agents/sentences.py)."""

from __future__ import annotations

import pytest

from llm_agents.sentences import end_on_sentence


@pytest.mark.parametrize("text,expected", [
    ("Hi there! Ready for a quiz?", "Hi there! Ready for a quiz?"),
    ("Hi there! Ready for a quiz? ", "Hi there! Ready for a quiz?"),
    ('She said "go."', 'She said "go."'),
    ("Great job 🎉", "Great job 🎉"),
    ("Paris is the capital of France. The next question is about the",
     "Paris is the capital of France."),
    ("Welcome everyone! Tonight we have a great show. Our first guest is",
     "Welcome everyone! Tonight we have a great show."),
    # The last boundary keeps too little: end on a whole word instead.
    ("Hi! Tonight we will talk about the history of the longest rivers of the",
     "Hi! Tonight we will talk about the history of the longest rivers of…"),
    ("one long sentence that never ends because the model ran out of tokens and",
     "one long sentence that never ends because the model ran out of tokens…"),
    ("Well, the answer is,", "Well, the answer…"),
    ("", ""),
    ("word", "word…"),
    ("e.g. this one", "e.g. this…"),  # the last word may be cut mid-word
])
def test_end_on_sentence(text: str, expected: str) -> None:
    assert end_on_sentence(text) == expected
