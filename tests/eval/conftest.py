"""Tiny random models and stand-ins for the eval tests; nothing is downloaded.

Tokenizers come from tests/data (trained in memory); models are built from configs sized to
them. `FixedReplyModel` is the seam for known-answer tests: a real tiny causal LM for
perplexity whose generate() always answers the same text.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig

from tests.data.conftest import (  # noqa: F401 - offline_datasets is an autouse fixture
    build_chat_tokenizer,
    build_opt_style_tokenizer,
    offline_datasets,
)

SIZES = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 1024,
}


def tiny_causal_lm(model_type: str, tokenizer, seed: int = 0):
    special = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    configs = {
        "llama": lambda: LlamaConfig(
            intermediate_size=64, num_key_value_heads=2, **SIZES, **special
        ),
        "opt": lambda: OPTConfig(ffn_dim=64, word_embed_proj_dim=32, **SIZES, **special),
    }
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(configs[model_type]()).eval()


class FixedReplyModel(torch.nn.Module):
    """forward() is the wrapped model's (perplexity is real); generate() appends the same
    reply to every prompt, cut at max_new_tokens, as HF generate returns prompt + new ids,
    and keeps the generation config it was given."""

    def __init__(self, model, reply_ids: list[int]):
        super().__init__()
        self.model, self.reply_ids = model, reply_ids
        self.last_generation_config = None

    def forward(self, **inputs):
        return self.model(**inputs)

    def generate(self, input_ids, attention_mask, generation_config):
        self.last_generation_config = generation_config
        reply = torch.tensor(self.reply_ids[: generation_config.max_new_tokens], dtype=torch.long)
        return torch.cat([input_ids, reply.expand(len(input_ids), -1).to(input_ids.device)], dim=1)


# Package scope: set before the module-scoped fixtures that train models, restored when the
# tests/eval package is done.
@pytest.fixture(scope="package", autouse=True)
def single_thread():
    """One torch thread: these models are tiny, and on a shared CPU extra threads mostly wait
    for each other (ten times slower measured here under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def chat_tokenizer():
    return build_chat_tokenizer()


@pytest.fixture(scope="session")
def opt_tokenizer():
    return build_opt_style_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama(chat_tokenizer):
    return tiny_causal_lm("llama", chat_tokenizer)


def fixed_reply_model(model, tokenizer, reply: str) -> FixedReplyModel:
    return FixedReplyModel(model, tokenizer(reply, add_special_tokens=False)["input_ids"])
