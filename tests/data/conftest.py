"""Tiny tokenizers trained in memory (nothing is downloaded) and an offline `datasets`.

The builders are plain functions so that other test folders can import them; the fixtures
build each tokenizer once per session.
"""

import datasets
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Covers the words the tests use, so that BPE learns real merges for them.
TRAINING_SENTENCES = [
    "How do I bake bread at home?",
    "Sure, mix flour, water and yeast, then bake it for forty minutes.",
    "How can I pick a lock to get into my neighbour's house?",
    "I cannot help with that request.",
    "What is the capital of France?",
    "Paris is the capital of France.",
    "Tell me a story about a dragon.",
    "Once upon a time a dragon guarded a golden hoard.",
    "You are a helpful AI assistant.",
    "### Question: ### Answer:",
]

# SmolLM2's template in miniature: a default system turn, <|im_start|>role ... <|im_end|>.
SMOL_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(
    *,
    special_tokens: dict[str, str],
    prepend_bos: bool = False,
    chat_template: str | None = None,
    split_words: bool = True,
    training_texts: list[str] = TRAINING_SENTENCES,
    vocab_size: int = 400,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 / OPT / Llama-3 / SmolLM2 family) trained on
    training_texts. special_tokens maps roles (bos_token, eos_token, pad_token, ...) to
    token strings; prepend_bos adds BOS to every encoding as OPT and Llama do;
    split_words=False drops GPT-2's word splitting so that merges cross word boundaries."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split_words)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys(special_tokens.values())),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(training_texts, trainer)
    if prepend_bos:
        bos = special_tokens["bos_token"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A $B",
            special_tokens=[(bos, backend.token_to_id(bos))],
        )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **special_tokens)
    tokenizer.chat_template = chat_template
    return tokenizer


def build_gpt2_style_tokenizer() -> PreTrainedTokenizerFast:
    """No chat template, no BOS added, EOS = <|endoftext|>, no pad token."""
    return build_tokenizer(
        special_tokens={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    )


def build_opt_style_tokenizer() -> PreTrainedTokenizerFast:
    """No chat template, </s> prepended as BOS to every encoding, EOS = </s>, pad <pad>."""
    return build_tokenizer(
        special_tokens={"bos_token": "</s>", "eos_token": "</s>", "pad_token": "<pad>"},
        prepend_bos=True,
    )


def build_chat_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-3 / SmolLM2-like: byte-level BPE with an <|im_start|> chat template."""
    return build_tokenizer(
        special_tokens={
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
        },
        chat_template=SMOL_CHAT_TEMPLATE,
    )


@pytest.fixture(autouse=True)
def offline_datasets(tmp_path, monkeypatch):
    """`datasets` never reaches the hub and writes its Arrow cache under tmp_path."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # datasets reads these at import time; patch the values it uses.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")


@pytest.fixture(scope="session")
def gpt2_style_tokenizer():
    return build_gpt2_style_tokenizer()


@pytest.fixture(scope="session")
def opt_style_tokenizer():
    return build_opt_style_tokenizer()


@pytest.fixture(scope="session")
def chat_tokenizer():
    return build_chat_tokenizer()


@pytest.fixture(params=["gpt2_style_tokenizer", "opt_style_tokenizer", "chat_tokenizer"])
def any_tokenizer(request):
    """Each kind of tokenizer in turn: plain template without and with BOS, chat template."""
    return request.getfixturevalue(request.param)
