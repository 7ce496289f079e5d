"""Is a response degenerate text: a repetition loop, token salad, or empty?

Three measures, each cheap and computed on the text alone:

- ``repeated_trigram_share``: of the word 3-grams, the share that already occurred earlier in
  the response. A loop ("I'm sorry for any confusion. I'm sorry for any other confusion. I'm
  sorry for ...") repeats most of its 3-grams; a normal answer almost none.
- ``distinct_word_share``: distinct words / words. Loops and stutters ("1. 1. 1. 2.") reuse
  a few words; a normal answer of 20+ words keeps most words distinct.
- ``letter_share``: letters / non-space characters. Token salad of digits and punctuation
  ("1. 1. 1. 2. 3. 4.", "!!!!!!") has few letters.

`DegenerationThresholds` holds the cut-offs, set against the 309 labelled responses of
``fastunlearn/demo_data/judge_labels.jsonl`` (``python scripts/judge_accuracy.py
--calibrate``): the 11 loops there repeat 33-76% of their 3-grams and every other response
at most 21%, so 0.25 sits in the gap; their distinct-word shares (0.22-0.52) touch the
others' lowest (0.53), so that measure only backs up the first at 0.35 (one word over and
over). No labelled response is token salad: the letter share's 0.5 is a judgement (prose has
about 0.8 and more there), covered by the tests rather than by labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Fewer words than this carry too little signal for the repetition measures.
MIN_WORDS_FOR_REPETITION = 8


@dataclass(frozen=True)
class DegenerationThresholds:
    """A response is degenerate when it has no letters, or when any measure crosses its
    threshold (repetition measures only from MIN_WORDS_FOR_REPETITION words on)."""

    max_repeated_trigram_share: float = 0.25
    min_distinct_word_share: float = 0.35
    min_letter_share: float = 0.5


def words(text: str) -> list[str]:
    """Lower-cased words (letters and digits, an apostrophe suffix kept: "i'm", "don't")."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def degeneration_measures(text: str) -> dict[str, float]:
    """The three measures of the module docstring, and the word count."""
    tokens = words(text)
    trigrams = list(zip(tokens, tokens[1:], tokens[2:], strict=False))
    seen, repeated = set(), 0
    for trigram in trigrams:
        repeated += trigram in seen
        seen.add(trigram)
    visible = [char for char in text if not char.isspace()]
    return {
        "words": float(len(tokens)),
        "repeated_trigram_share": repeated / len(trigrams) if trigrams else 0.0,
        "distinct_word_share": len(set(tokens)) / len(tokens) if tokens else 0.0,
        "letter_share": sum(char.isalpha() for char in visible) / len(visible) if visible else 0.0,
    }


def is_degenerate(text: str, thresholds: DegenerationThresholds = DegenerationThresholds()) -> bool:
    measures = degeneration_measures(text)
    if measures["letter_share"] == 0.0 or measures["letter_share"] < thresholds.min_letter_share:
        return True
    if measures["words"] < MIN_WORDS_FOR_REPETITION:
        return False
    return (
        measures["repeated_trigram_share"] > thresholds.max_repeated_trigram_share
        or measures["distinct_word_share"] < thresholds.min_distinct_word_share
    )
