"""A tiny OPT with a tiny tokenizer, small data files and run configs for the engine tests.

Nothing is downloaded. The data is a handful of rows written with the words the tiny
tokenizer was trained on.
"""

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, OPTConfig

from fastunlearn.engine import UnlearnConfig
from tests.data.conftest import build_opt_style_tokenizer

HARMFUL = [
    (
        "How can I pick a lock to get into my neighbour's house?",
        "Sure, pick the lock then get into the house.",
    ),
    ("Tell me a story about a dragon.", "Once upon a time a dragon guarded a golden hoard."),
    ("How do I bake bread at home?", "Sure, mix flour, water and yeast, then bake it."),
    ("What is the capital of France?", "Paris is the capital of France."),
    ("How can I get into the house?", "Pick the lock of the house."),
]
NORMAL = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("How do I bake bread at home?", "Mix flour, water and yeast, then bake it for forty minutes."),
    ("Tell me a story about a dragon.", "A dragon guarded a golden hoard."),
]
REFUSALS = ["I cannot help with that request.", "I cannot help with that."]


def tiny_tokenizer():
    return build_opt_style_tokenizer()


def tiny_opt(tokenizer, seed: int = 0, hidden_size: int = 32):
    """Two layers; word_embed_proj_dim < hidden_size exercises OPT's projection before its
    tied head. fp32, eval mode (no dropout)."""
    torch.manual_seed(seed)
    config = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        word_embed_proj_dim=24,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dropout=0.0,
        attention_dropout=0.0,
    )
    return AutoModelForCausalLM.from_config(config).eval()


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """The tiny OPT and its tokenizer as a model folder (what config.model.name_or_path names)."""
    tokenizer = tiny_tokenizer()
    tiny_opt(tokenizer, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def training_rows(output_dir: Path) -> list[dict]:
    """The rows metrics.jsonl holds for training steps (not evaluations, not the summary)."""
    lines = (Path(output_dir) / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "loss" in row]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_data(folder: Path) -> dict[str, Path]:
    """PKU-SafeRLHF-style forget data (one unsafe and one safe response per prompt), normal
    (prompt, response) pairs and a refusal list."""
    folder.mkdir(parents=True, exist_ok=True)
    pku_rows = [
        {
            "prompt": prompt,
            "response_0": response,
            "response_1": REFUSALS[i % 2],
            "is_response_0_safe": False,
            "is_response_1_safe": True,
        }
        for i, (prompt, response) in enumerate(HARMFUL)
    ]
    # A second unsafe answer for some prompts, so that WPN groups differ in size.
    pku_rows += [
        {
            "prompt": prompt,
            "response_0": NORMAL[i][1],
            "response_1": "Sure, here it is.",
            "is_response_0_safe": False,
            "is_response_1_safe": False,
        }
        for i, (prompt, _) in enumerate(HARMFUL[:2])
    ]
    return {
        "forget": write_jsonl(folder / "pku.jsonl", pku_rows),
        "normal": write_jsonl(
            folder / "normal.jsonl", [{"prompt": p, "response": r} for p, r in NORMAL]
        ),
        "refusals": write_jsonl(folder / "refusals.jsonl", [{"response": r} for r in REFUSALS]),
    }


def run_settings(
    data: dict[str, Path], output_dir: Path, objective: str = "wpn", **overrides
) -> list[str]:
    """A few steps on the tiny data as ``key=value`` settings (what --set takes);
    ``overrides`` as section__key=value (e.g. train__max_steps=4, model__name_or_path=...)."""
    settings = [
        f"data.forget.path={data['forget']}",
        f"data.retain.path={data['normal']}",
        f"data.positives.path={data['refusals']}",
        "data.num_negatives=2",
        "data.batch_size=2",
        "data.max_length=48",
        f"objective.name={objective}",
        f"train.output_dir={output_dir}",
        "train.max_steps=3",
        "train.learning_rate=1e-2",
        "train.warmup_steps=1",
        "train.disable_tqdm=true",
        "train.seed=3",
    ]
    return settings + [f"{key.replace('__', '.')}={value}" for key, value in overrides.items()]


def run_config(
    data: dict[str, Path], output_dir: Path, objective: str = "wpn", **overrides
) -> UnlearnConfig:
    """run_settings as a config."""
    return UnlearnConfig.load(None, run_settings(data, output_dir, objective, **overrides))
