"""[prompt ; response] pairs and text corpora -> token ids with span masks (docs/objectives.md).

A pair is written with the tokenizer's chat template when it has one (user turn = prompt,
assistant turn = response), else with the plain template
"### Question: {prompt}\\n### Answer: {response}" followed by EOS. The response span always
ends with the token that stops generation (the chat template's end-of-turn marker, or EOS),
so that every objective on responses also teaches where an answer ends.

Spans are found on the text and carried over to tokens: the tokens of the text up to a
span boundary must be a prefix of the tokens of the whole text, which holds for BPE at a
turn boundary. When it does not (a merge across the boundary), a fast tokenizer's offset
mapping places the boundary instead.

Text from the data is always read as text: where it spells one of the tokenizer's special
tokens ("<|im_end|>", "<|endoftext|>"), those characters become ordinary tokens, never the
control token itself, so that data cannot end its turn or open another one. Only the chat
template writes control tokens.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

PLAIN_PROMPT_TEMPLATE = "### Question: {prompt}\n### Answer:"
# Joins the plain prompt to the response. It belongs to the response span: BPE merges it
# into the first response token.
PLAIN_RESPONSE_SEPARATOR = " "
# Stand-ins for the special-token strings of the data while a chat template renders it, from
# Unicode's private-use plane 16: no template writes or changes them.
STAND_IN_CODE_POINTS = range(0x100000, 0x10FFFE)

# Character ranges [start, end) of a text that are the data's own and read as plain text.
TextRanges = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class TokenizedExample:
    """One token sequence with its prompt and response spans.

    Plain lists, not tensors: examples are built one at a time on the host and only become
    tensors once padded into a batch (`pad_examples`). `prompt_mask[t]` / `response_mask[t]`
    say whether token t is in the span. For a pair both spans are non-empty and contiguous.
    The prompt span starts at token 0: BOS and any system preamble of the chat template
    included, through the generation prompt ("### Answer:" in the plain template). The
    response span follows: the response's tokens, then the chat template's end-of-turn
    marker (or, with the plain template, the space before them and the EOS after). Tokens
    in neither span (the newline after a chat turn) are still part of the input. A text
    block (`token_blocks`) is all response and no prompt.
    """

    input_ids: list[int]
    prompt_mask: list[bool]
    response_mask: list[bool]

    def __post_init__(self):
        if not len(self.input_ids) == len(self.prompt_mask) == len(self.response_mask):
            raise ValueError(
                "input_ids, prompt_mask and response_mask differ in length: "
                f"{len(self.input_ids)}, {len(self.prompt_mask)}, {len(self.response_mask)}"
            )

    def __len__(self) -> int:
        return len(self.input_ids)

    @classmethod
    def from_spans(
        cls, input_ids: list[int], prompt: tuple[int, int], response: tuple[int, int]
    ) -> TokenizedExample:
        """Masks from [start, end) token spans."""
        positions = range(len(input_ids))
        return cls(
            input_ids=list(input_ids),
            prompt_mask=[prompt[0] <= t < prompt[1] for t in positions],
            response_mask=[response[0] <= t < response[1] for t in positions],
        )

    def truncated(self, max_length: int) -> TokenizedExample:
        """The first max_length tokens."""
        return TokenizedExample(
            self.input_ids[:max_length],
            self.prompt_mask[:max_length],
            self.response_mask[:max_length],
        )


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, *, finished: bool = True
) -> TokenizedExample:
    """Tokenize one (prompt, response) pair, untruncated. A response that is not
    ``finished`` (generation ran out of tokens) ends without the end-of-turn marker or EOS,
    so that training on it does not teach the model to stop where it was cut.

    ValueError for a blank prompt or response, or a chat template that does not write the
    prompt turn as the start of the conversation or does not reproduce the response text.
    """
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    if not response.strip():
        raise ValueError("the response is empty")
    chat = bool(getattr(tokenizer, "chat_template", None))
    if chat:
        text, char_boundaries, ends_turn, data_ranges = _render_chat(
            tokenizer, prompt, response, finished
        )
    else:
        # All of the plain template's text is data or holds no special token.
        text, char_boundaries = _render_plain(prompt, response)
        ends_turn, data_ranges = False, [(0, len(text))]
    # A chat template writes its own special tokens (BOS included); the plain template gets
    # the ones the tokenizer adds by default (OPT's and Llama's BOS).
    input_ids, (prompt_end, response_start, response_end) = _token_boundaries(
        tokenizer, text, char_boundaries, add_special_tokens=not chat, data_ranges=data_ranges
    )
    if finished and not ends_turn and tokenizer.eos_token_id is not None:
        # No end-of-turn marker after the response (the plain template, or a chat template
        # that writes none): EOS is where the answer stops.
        input_ids.insert(response_end, tokenizer.eos_token_id)
        response_end += 1
    # Possible when a token merges the whole prompt with the response's first characters.
    if prompt_end == 0:
        raise ValueError("the prompt covers no token of its own")
    return TokenizedExample.from_spans(input_ids, (0, prompt_end), (response_start, response_end))


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """The tokens a response is generated after: the prompt span of tokenize_pair (chat
    template with its generation prompt, else the plain "### Question: ... ### Answer:")."""
    if getattr(tokenizer, "chat_template", None):
        text, data_ranges = _render_messages(
            tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True
        )
        return _encode(tokenizer, text, data_ranges, add_special_tokens=False)["input_ids"]
    text = PLAIN_PROMPT_TEMPLATE.format(prompt=prompt)
    return _encode(tokenizer, text, [(0, len(text))], add_special_tokens=True)["input_ids"]


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Iterable[tuple[str, str]],
    *,
    max_length: int | None = None,
    on_overlong: Literal["error", "skip"] = "error",
    source: str | None = None,
) -> list[TokenizedExample]:
    """Tokenize (prompt, response) pairs (e.g. `readers.PromptResponse`) in order.

    An example longer than max_length keeps its first max_length tokens, so its response is
    cut short. One whose prompt leaves no room for a response token cannot be trained on:
    on_overlong="error" raises a ValueError naming its index (and `source`, the file it came
    from, when given); "skip" drops it and warns once with the indices of all dropped.
    Other bad pairs (blank text) always raise, naming the index.
    """
    if max_length is not None and max_length < 2:
        raise ValueError(
            f"max_length must be at least 2 (a prompt and a response token), got {max_length}"
        )
    if on_overlong not in ("error", "skip"):
        raise ValueError(f"on_overlong must be 'error' or 'skip', got {on_overlong!r}")
    origin = f" of {source}" if source else ""
    examples, skipped = [], []
    for index, (prompt, response) in enumerate(pairs):
        try:
            example = tokenize_pair(tokenizer, prompt, response)
        except ValueError as error:
            raise ValueError(f"example {index}{origin}: {error}") from error
        if max_length is not None and len(example) > max_length:
            # The prompt span starts at token 0, so truncation can only empty the response.
            truncated = example.truncated(max_length)
            if not any(truncated.response_mask):
                if on_overlong == "error":
                    raise ValueError(
                        f"example {index}{origin}: its prompt fills max_length={max_length} tokens "
                        f"(the example has {len(example)}), leaving no response token; shorten it, "
                        "raise max_length or pass on_overlong='skip'"
                    )
                skipped.append(index)
                continue
            example = truncated
        examples.append(example)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} example(s){origin} whose prompt leaves no response token "
            f"within max_length={max_length}: indices {skipped}",
            stacklevel=2,
        )
    return examples


def token_blocks(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    block_length: int,
    *,
    stride: int | None = None,
) -> list[TokenizedExample]:
    """Cut a corpus (e.g. `readers.read_corpus`) into blocks of block_length tokens.

    Documents are tokenized without special tokens and joined with EOS (when the tokenizer
    has one), so that a block never runs one document silently into the next. Blocks start
    every `stride` tokens (default block_length: no overlap; less: overlapping windows;
    more: gaps). When the last of them stops short of the end, one more block ending at the
    last token is added, overlapping its predecessor, so the end of the corpus is never
    dropped. A corpus shorter than block_length gives one shorter block. Each block is all
    response span (the text to forget or retain) and no prompt.
    """
    if block_length < 1:
        raise ValueError(f"block_length must be positive, got {block_length}")
    stride = block_length if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    corpus_ids: list[int] = []
    # verbose=False: a long document is expected here, not a sign of a mistake.
    # split_special_tokens: a document that spells "<|endoftext|>" holds text, not an EOS.
    for document_ids in tokenizer(
        list(texts), add_special_tokens=False, verbose=False, split_special_tokens=True
    )["input_ids"]:
        if corpus_ids and tokenizer.eos_token_id is not None:
            corpus_ids.append(tokenizer.eos_token_id)
        corpus_ids.extend(document_ids)
    if not corpus_ids:
        raise ValueError("the corpus has no tokens")
    starts = list(range(0, max(len(corpus_ids) - block_length, 0) + 1, stride))
    if starts[-1] + block_length < len(corpus_ids):
        starts.append(len(corpus_ids) - block_length)
    blocks = [corpus_ids[start : start + block_length] for start in starts]
    return [TokenizedExample.from_spans(block, (0, 0), (0, len(block))) for block in blocks]


def _render_plain(prompt: str, response: str) -> tuple[str, tuple[int, int, int]]:
    """The text and its character boundaries: prompt end, response start, response end."""
    prompt_text = PLAIN_PROMPT_TEMPLATE.format(prompt=prompt)
    text = prompt_text + PLAIN_RESPONSE_SEPARATOR + response
    return text, (len(prompt_text), len(prompt_text), len(text))


def _render_chat(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, finished: bool = True
) -> tuple[str, tuple[int, int, int], bool, TextRanges]:
    """The text, its character boundaries (prompt end, response start, response end),
    whether the response span ends with the template's end-of-turn marker, and the ranges
    of the data's special-token strings (to be read as text). Not ``finished``: the text
    stops where the response's content does."""
    user_turn = {"role": "user", "content": prompt}
    prompt_text, _ = _render_messages(tokenizer, [user_turn], add_generation_prompt=True)
    text, data_ranges = _render_messages(
        tokenizer, [user_turn, {"role": "assistant", "content": response}]
    )
    if not text.startswith(prompt_text):
        raise ValueError(
            "the chat template writes the prompt with its generation prompt differently from the "
            "start of the whole conversation, so the prompt span has no place in it"
        )
    prompt_end = len(prompt_text)
    # Some templates trim the message content.
    content = response if response in text[prompt_end:] else response.strip()
    content_start = text.find(content, prompt_end)
    if content_start < 0:
        raise ValueError("the chat template does not reproduce the response text")
    # Whitespace between the generation prompt and the content goes with the response, as
    # BPE merges it into the first content token; anything else (a template's empty
    # reasoning block, say) stays outside both spans.
    response_start = prompt_end if not text[prompt_end:content_start].strip() else content_start
    content_end = content_start + len(content)
    if not finished:
        return text[:content_end], (prompt_end, response_start, content_end), False, data_ranges
    end_of_turn = _end_of_turn_length(tokenizer, text[content_end:])
    boundaries = (prompt_end, response_start, content_end + end_of_turn)
    return text, boundaries, end_of_turn > 0, data_ranges


def _render_messages(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], **options
) -> tuple[str, TextRanges]:
    """The chat template's text of messages, and the ranges in it of the special-token
    strings the messages' content spells.

    The template renders the content with each such string swapped for a private-use
    stand-in, which is swapped back afterwards: where they stand is then known exactly,
    also when a template repeats, trims or moves the content, and also when the same
    string is one the template writes itself (its "<|im_end|>" is a control token, the
    data's is text). A template that drops a stand-in drops that string from the text.
    """
    special_strings = _special_token_strings(tokenizer)
    if not special_strings:
        return tokenizer.apply_chat_template(messages, tokenize=False, **options), []
    pattern = re.compile("|".join(map(re.escape, special_strings)))
    data_characters = {character for message in messages for character in message["content"]}
    stand_ins = (chr(code) for code in STAND_IN_CODE_POINTS if chr(code) not in data_characters)
    originals: dict[str, str] = {}

    def stand_in_for(match: re.Match) -> str:
        stand_in = next(stand_ins)
        originals[stand_in] = match.group(0)
        return stand_in

    hidden = [
        {**message, "content": pattern.sub(stand_in_for, message["content"])}
        for message in messages
    ]
    rendered = tokenizer.apply_chat_template(hidden, tokenize=False, **options)
    if not originals:
        return rendered, []
    pieces, data_ranges, length, previous_end = [], [], 0, 0
    for match in re.finditer("|".join(map(re.escape, originals)), rendered):
        before = rendered[previous_end : match.start()]
        original = originals[match.group(0)]
        pieces += [before, original]
        start = length + len(before)
        data_ranges.append((start, start + len(original)))
        length, previous_end = start + len(original), match.end()
    pieces.append(rendered[previous_end:])
    return "".join(pieces), data_ranges


def _special_token_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The strings the tokenizer reads as special tokens, longest first (a regex alternation
    then matches the longest at each place, as the tokenizer does)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}).values()
    strings = {token.content for token in added if token.special}
    strings.update(tokenizer.all_special_tokens)
    return sorted(filter(None, strings), key=len, reverse=True)


def _end_of_turn_length(tokenizer: PreTrainedTokenizerBase, after_content: str) -> int:
    """Characters from the end of the response content through the template's end-of-turn
    marker (whitespace, then a special token such as SmolLM2's <|im_end|>), 0 when the
    template writes none there. The marker is what the model emits to stop: a response span
    without it teaches a refusal's words but not to end after them."""
    stripped = after_content.lstrip()
    markers = [
        token for token in tokenizer.all_special_tokens if token and stripped.startswith(token)
    ]
    return len(after_content) - len(stripped) + max(map(len, markers)) if markers else 0


def _encode(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    data_ranges: TextRanges,
    *,
    add_special_tokens: bool,
    return_offsets_mapping: bool = False,
) -> dict[str, list]:
    """input_ids (and offset_mapping, in characters of text) of text, whose data_ranges are
    read as plain text even where they spell a special token.

    Text is cut at the edges of the ranges and each piece tokenized on its own. The cuts
    change nothing elsewhere: the tokenizer splits its text at every special-token string
    anyway, and the ranges of a chat text are such strings. Several pieces are for a chat
    text, which carries its own special tokens (add_special_tokens must then be False).
    """
    # (start, end, read as text) of each piece, empty ones left out; an empty text is one.
    pieces, position = [], 0
    for start, end in sorted(data_ranges):
        pieces += [(position, start, False), (start, end, True)]
        position = max(position, end)
    pieces.append((position, len(text), False))
    pieces = [(start, end, as_text) for start, end, as_text in pieces if start < end] or [
        (0, 0, False)
    ]
    if len(pieces) > 1 and add_special_tokens:
        raise ValueError("add_special_tokens applies to a text tokenized in one piece")
    encoded: dict[str, list] = {"input_ids": [], "offset_mapping": []}
    for start, end, as_text in pieces:
        piece = tokenizer(
            text[start:end],
            add_special_tokens=add_special_tokens,
            split_special_tokens=as_text,
            return_offsets_mapping=return_offsets_mapping,
        )
        encoded["input_ids"] += piece["input_ids"]
        if return_offsets_mapping:
            encoded["offset_mapping"] += [
                (first + start, last + start) for first, last in piece["offset_mapping"]
            ]
    return encoded


def _token_boundaries(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    char_boundaries: tuple[int, int, int],
    *,
    add_special_tokens: bool,
    data_ranges: TextRanges = (),
) -> tuple[list[int], tuple[int, int, int]]:
    """The token ids of text and the token index of each character boundary (prompt end,
    response start, response end), by the prefix check, else by offsets. data_ranges: see
    _encode."""
    input_ids = _encode(tokenizer, text, data_ranges, add_special_tokens=add_special_tokens)[
        "input_ids"
    ]
    token_boundaries = {}
    for boundary in set(char_boundaries):
        prefix_ranges = [
            (start, min(end, boundary)) for start, end in data_ranges if start < boundary
        ]
        prefix_ids = _encode(
            tokenizer, text[:boundary], prefix_ranges, add_special_tokens=add_special_tokens
        )["input_ids"]
        if input_ids[: len(prefix_ids)] != prefix_ids:
            return input_ids, _token_boundaries_by_offsets(
                tokenizer,
                text,
                char_boundaries,
                add_special_tokens=add_special_tokens,
                data_ranges=data_ranges,
            )
        token_boundaries[boundary] = len(prefix_ids)
    return input_ids, tuple(token_boundaries[boundary] for boundary in char_boundaries)


def _token_boundaries_by_offsets(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    char_boundaries: tuple[int, int, int],
    *,
    add_special_tokens: bool,
    data_ranges: TextRanges = (),
) -> tuple[int, int, int]:
    """Boundaries from the offset mapping. A token straddling the prompt/response boundary
    goes to the response, one straddling the response end stays in it: the response keeps
    every character of its text."""
    if not tokenizer.is_fast:
        raise ValueError(
            "the prompt tokens are not a prefix of the prompt+response tokens and a slow "
            "tokenizer has no offset mapping to place the spans; use a fast tokenizer"
        )
    offsets = _encode(
        tokenizer,
        text,
        data_ranges,
        add_special_tokens=add_special_tokens,
        return_offsets_mapping=True,
    )["offset_mapping"]
    # Tokens the tokenizer adds itself (BOS, EOS) cover no characters and are skipped: they
    # fall on the side of the boundary where their neighbours are.
    covering = [(index, start, end) for index, (start, end) in enumerate(offsets) if end > start]

    def first_token_ending_after(position: int) -> int:
        return next((index for index, _, end in covering if end > position), len(offsets))

    def first_token_starting_from(position: int) -> int:
        return next((index for index, start, _ in covering if start >= position), len(offsets))

    prompt_end, response_start, response_end = char_boundaries
    response_start_token = first_token_ending_after(response_start)
    return (
        min(first_token_starting_from(prompt_end), response_start_token),
        response_start_token,
        first_token_starting_from(response_end),
    )
