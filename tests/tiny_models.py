"""Tiny random-initialised causal LMs and random batches for the model and objective tests.

Nothing is downloaded: every model is built from a config. fp32, eval mode (no dropout),
fixed seeds.
"""

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Qwen2Config,
)

from fastunlearn.objectives import ContrastiveBatch, SequenceBatch

VOCAB = 160
SPECIAL_TOKENS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def tiny_config(model_type: str):
    """Two layers, hidden size 32 (OPT: projected to 24 before its tied head)."""
    common = {"vocab_size": VOCAB, **SPECIAL_TOKENS}
    llama_like = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        **common,
    }
    configs = {
        # word_embed_proj_dim != hidden_size exercises OPT's project_out before the tied head.
        "opt": lambda: OPTConfig(
            hidden_size=32,
            word_embed_proj_dim=24,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            **common,
        ),
        "gpt_neo": lambda: GPTNeoConfig(
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            window_size=8,
            attention_types=[[["global", "local"], 1]],
            max_position_embeddings=64,
            **common,
        ),
        "gpt2": lambda: GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common),
        "llama": lambda: LlamaConfig(**llama_like),
        "mistral": lambda: MistralConfig(**llama_like),
        "qwen2": lambda: Qwen2Config(**llama_like),
    }
    return configs[model_type]()


def tiny_model(model_type: str, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()


def _sequence(generator, prompt_length, response_length, length, prompt=None):
    """One right-padded row: (input_ids, attention_mask, prompt_mask, response_mask)."""
    ids = torch.zeros(length, dtype=torch.long)
    if prompt is None:
        prompt = torch.randint(3, VOCAB, (prompt_length,), generator=generator)
    used = len(prompt) + response_length
    ids[: len(prompt)] = prompt
    ids[len(prompt) : used] = torch.randint(3, VOCAB, (response_length,), generator=generator)
    positions = torch.arange(length)
    return (
        ids,
        (positions < used).long(),
        positions < len(prompt),
        (positions >= len(prompt)) & (positions < used),
    )


def _stack(rows):
    return [torch.stack(column) for column in zip(*rows, strict=True)]


def random_sequence_batch(
    seed: int, spans=((3, 4), (5, 2), (2, 6)), length: int = 12
) -> SequenceBatch:
    """One sequence per (prompt length, response length), right-padded to ``length``."""
    generator = torch.Generator().manual_seed(seed)
    return SequenceBatch(*_stack([_sequence(generator, p, r, length) for p, r in spans]))


def random_contrastive_batch(
    seed: int, num_prompts: int = 2, num_negatives: int = 3, length: int = 12, candidate_mask=None
) -> ContrastiveBatch:
    """Each prompt (its own length) with 1 + num_negatives responses of varied lengths."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for p in range(num_prompts):
        prompt = torch.randint(3, VOCAB, (3 + p,), generator=generator)
        for j in range(1 + num_negatives):
            rows.append(_sequence(generator, None, 2 + (j + p) % 4, length, prompt=prompt))
    return ContrastiveBatch(
        *_stack(rows), num_candidates=1 + num_negatives, candidate_mask=candidate_mask
    )
