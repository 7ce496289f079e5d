"""Is a response degenerate text: a repetition loop, token salad, gibberish, or empty?

Four measures, each cheap and computed on the text alone:

- ``repeated_trigram_share``: of the word 3-grams, the share that already occurred earlier in
  the response. A loop ("I'm sorry for any confusion. I'm sorry for any other confusion. I'm
  sorry for ...") repeats most of its 3-grams; a normal answer almost none.
- ``distinct_word_share``: distinct words / words. Loops and stutters ("1. 1. 1. 2.") reuse
  a few words; a normal answer of 20+ words keeps most words distinct.
- ``letter_share``: letters / non-space characters. Token salad of digits and punctuation
  ("1. 1. 1. 2. 3. 4.", "!!!!!!") has few letters.
- ``english_word_share``: of the words in the response's clauses of MIN_CLAUSE_WORDS words
  or more, the share that are common English function words ("the", "of", "is", "you").
  They make up a quarter to a half of English prose; fluent gibberish in another language
  ("Escritúo de la vida específica! Vamos con la forma de ...") or of invented words has
  almost none. Short clauses are left out so that lists ("Apple, banana, cherry") and verse
  fragments do not count. It only applies when the prompt is English (`is_degenerate`).

`DegenerationThresholds` holds the cut-offs, set against the 309 labelled responses of
``fastunlearn/demo_data/judge_labels.jsonl`` (``python scripts/judge_accuracy.py
--calibrate``): the 11 loops there repeat 33-76% of their 3-grams and every other response
at most 21%, so 0.25 sits in the gap; their distinct-word shares (0.22-0.52) touch the
others' lowest (0.53), so that measure only backs up the first at 0.35 (one word over and
over). No labelled response is token salad: the letter share's 0.5 is a judgement (prose has
about 0.8 and more there), covered by the tests rather than by labels. Nor is any in another
language: every labelled response that is not degenerate has an English word share of 0.26
or more (of all 737), so 0.15 leaves a wide margin while gibberish scores near 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Fewer words than this carry too little signal for the repetition measures.
MIN_WORDS_FOR_REPETITION = 8
# Words of any alphabet, so that "específica" is one foreign word, not "espec" and "fica".
_LETTER_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_CLAUSE_END = re.compile(r"[,;:.!?()\n]")
# Clauses shorter than this (list items, verse fragments) say little about the language.
MIN_CLAUSE_WORDS = 4
# Fewer words than this in long clauses are too few to tell the language by: short answers
# are never called gibberish.
MIN_WORDS_FOR_LANGUAGE = 6
# Written by us: frequent English articles, pronouns, prepositions, conjunctions and
# auxiliaries, few of which are words in other languages.
ENGLISH_FUNCTION_WORDS = frozenset(
    """
a about after all also an and any are as at be because been before but by can could did do
does down for from had has have he her here him his how i i'm if in into is it it's its just me
might more most must my no not now of off on one only or our out over she should so some such
than that that's the their them then there these they this those through to too under up us
very was we were what when where which while who why will with would you your
""".split()
)
# A prompt that asks for another language is answered in it.
_OTHER_LANGUAGE = re.compile(
    r"\b(?:translat\w*|spanish|french|german|italian|portuguese|dutch|russian|chinese"
    r"|japanese|korean|arabic|hindi|latin)\b"
)


@dataclass(frozen=True)
class DegenerationThresholds:
    """A response is degenerate when it has no letters, or when any measure crosses its
    threshold (repetition measures only from MIN_WORDS_FOR_REPETITION words on)."""

    max_repeated_trigram_share: float = 0.25
    min_distinct_word_share: float = 0.35
    min_letter_share: float = 0.5
    min_english_word_share: float = 0.15


def words(text: str) -> list[str]:
    """Lower-cased words (letters and digits, an apostrophe suffix kept: "i'm", "don't")."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def english_word_share(text: str) -> float:
    """The share of English function words among the words of the text's clauses of
    MIN_CLAUSE_WORDS words or more; 1.0 (English, as far as can be told) when those hold fewer
    than MIN_WORDS_FOR_LANGUAGE words."""
    text = text.lower().replace("\u2019", "'")
    clauses = [_LETTER_WORD.findall(clause) for clause in _CLAUSE_END.split(text)]
    tokens = [word for clause in clauses if len(clause) >= MIN_CLAUSE_WORDS for word in clause]
    if len(tokens) < MIN_WORDS_FOR_LANGUAGE:
        return 1.0
    return sum(word in ENGLISH_FUNCTION_WORDS for word in tokens) / len(tokens)


def degeneration_measures(text: str) -> dict[str, float]:
    """The four measures of the module docstring, and the word count."""
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
        "english_word_share": english_word_share(text),
    }


def is_degenerate(
    text: str,
    thresholds: DegenerationThresholds = DegenerationThresholds(),
    prompt: str | None = None,
) -> bool:
    """With a prompt in English (one that reads as English and asks for no other language),
    a response that does not read as English is degenerate too."""
    measures = degeneration_measures(text)
    if measures["letter_share"] == 0.0 or measures["letter_share"] < thresholds.min_letter_share:
        return True
    if (
        prompt is not None
        and measures["english_word_share"] < thresholds.min_english_word_share
        and english_word_share(prompt) >= thresholds.min_english_word_share
        and not _OTHER_LANGUAGE.search(prompt.lower())
    ):
        return True
    if measures["words"] < MIN_WORDS_FOR_REPETITION:
        return False
    return (
        measures["repeated_trigram_share"] > thresholds.max_repeated_trigram_share
        or measures["distinct_word_share"] < thresholds.min_distinct_word_share
    )
