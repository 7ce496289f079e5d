"""Data: local files in the formats users have -> tokenized examples with span masks
(docs/architecture.md, docs/objectives.md).

readers      files -> records (HarmfulPrompt, PromptResponse, prompt / refusal lists, corpora)
tokenization records -> TokenizedExample (input ids, prompt and response masks), text blocks
collate      TokenizedExamples -> padded batch tensors
"""

from fastunlearn.data.collate import pad_examples
from fastunlearn.data.loading import load_rows, require_columns
from fastunlearn.data.readers import (
    HarmfulPrompt,
    PromptResponse,
    read_corpus,
    read_pairs,
    read_pku_saferlhf,
    read_prompts,
    read_refusals,
    read_truthfulqa,
)
from fastunlearn.data.tokenization import (
    TokenizedExample,
    token_blocks,
    tokenize_pair,
    tokenize_pairs,
)

__all__ = [
    "HarmfulPrompt",
    "PromptResponse",
    "TokenizedExample",
    "load_rows",
    "pad_examples",
    "read_corpus",
    "read_pairs",
    "read_pku_saferlhf",
    "read_prompts",
    "read_refusals",
    "read_truthfulqa",
    "require_columns",
    "token_blocks",
    "tokenize_pair",
    "tokenize_pairs",
]
