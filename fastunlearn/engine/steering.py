"""A training-free baseline: steer generation along a refusal direction (docs/objectives.md).

The direction is the difference between the mean position-weighted pooled prompt state of
harmful and of benign prompts at one layer; a logistic probe on the same pooled states
tells the two apart. `steered` adds ``strength`` times the direction to that layer's output
while the model generates: to every prompt, or, ``gated``, only to the prompts the probe
calls harmful. Nothing is trained and the weights stay as they were, so this measures how
much of the refusal behaviour the representation already holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fastunlearn.data import pad_examples
from fastunlearn.data.batches import padding_id
from fastunlearn.data.tokenization import TokenizedExample, prompt_ids
from fastunlearn.models import CausalLMAdapter, evaluation_mode
from fastunlearn.ops import position_weighted_mean_pool


@dataclass
class RefusalDirection:
    """``direction`` [H]: mean harmful minus mean benign pooled prompt state at ``layer``
    (HF's hidden_states index: the output of block ``layer``); the probe is
    sigmoid(pooled @ probe_weight + probe_bias) = P(harmful)."""

    layer: int
    direction: torch.Tensor
    probe_weight: torch.Tensor
    probe_bias: torch.Tensor

    def harmful_probability(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(pooled.float() @ self.probe_weight + self.probe_bias)


@torch.no_grad()
def pooled_prompt_states(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    layer: int,
    batch_size: int = 16,
) -> torch.Tensor:
    """[N, H] position-weighted mean of each prompt's states at ``layer``, prompts written as
    generation sees them (the chat template with its generation prompt)."""
    adapter, pad = CausalLMAdapter(model), padding_id(tokenizer)
    device = next(model.parameters()).device
    pooled = []
    with evaluation_mode(model):
        for start in range(0, len(prompts), batch_size):
            examples = [
                TokenizedExample.from_spans(ids, (0, len(ids)), (len(ids), len(ids)))
                for ids in (prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size])
            ]
            batch = {k: v.to(device) for k, v in pad_examples(examples, pad, "right").items()}
            hidden = adapter.hidden_states(batch["input_ids"], batch["attention_mask"], layer)
            pooled.append(position_weighted_mean_pool(hidden, batch["attention_mask"].bool()))
    return torch.cat(pooled).float()


def fit_refusal_direction(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    harmful_prompts: Sequence[str],
    benign_prompts: Sequence[str],
    layer: int,
    *,
    l2: float = 1e-3,
) -> RefusalDirection:
    """The direction and an L2-regularised logistic probe (classes weighted equally) fitted
    on the pooled prompt states of the two prompt sets."""
    harmful = pooled_prompt_states(model, tokenizer, harmful_prompts, layer)
    benign = pooled_prompt_states(model, tokenizer, benign_prompts, layer)
    states = torch.cat([harmful, benign])
    labels = torch.cat([torch.ones(len(harmful)), torch.zeros(len(benign))])
    weights = torch.where(labels == 1, 0.5 / len(harmful), 0.5 / len(benign))
    # Standardised features make one regularisation strength fit any layer's scale.
    mean, scale = states.mean(0), states.std(0).clamp_min(1e-6)
    w = torch.zeros(states.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = ((states - mean) / scale) @ w + b
        loss = (
            weights
            * torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        ).sum() + l2 * w.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    w, b = w.detach() / scale, b.detach() - (w.detach() / scale) @ mean
    return RefusalDirection(layer, harmful.mean(0) - benign.mean(0), w, b)


def _blocks(model: PreTrainedModel) -> torch.nn.ModuleList:
    body = CausalLMAdapter(model).causal_lm.base_model
    return body.layers if hasattr(body, "layers") else body.decoder.layers


@contextlib.contextmanager
def steered(
    model: PreTrainedModel, refusal: RefusalDirection, strength: float, *, gated: bool = False
) -> Iterator[PreTrainedModel]:
    """Within the block, ``model.generate`` adds strength * direction to the output of block
    refusal.layer at every position: of every prompt, or with ``gated`` of the prompts the
    probe gives P(harmful) > 0.5. Other forwards (perplexity) run unsteered."""
    device = next(model.parameters()).device
    direction = refusal.direction.to(device)
    adapter = CausalLMAdapter(model)
    row_scale: list[torch.Tensor | None] = [None]

    def add_direction(module, inputs, output):
        if row_scale[0] is None:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        shifted = hidden + (row_scale[0][:, None, None] * direction).to(hidden.dtype)
        return (shifted, *output[1:]) if isinstance(output, tuple) else shifted

    original_generate = model.generate

    def generate(*args, input_ids, attention_mask, **kwargs):
        scale = torch.full((input_ids.shape[0],), float(strength), device=device)
        if gated:
            with torch.no_grad():
                hidden = adapter.hidden_states(input_ids, attention_mask, refusal.layer)
                pooled = position_weighted_mean_pool(hidden, attention_mask.bool())
            scale = scale * (refusal.harmful_probability(pooled).to(device) > 0.5)
        row_scale[0] = scale
        try:
            return original_generate(
                *args, input_ids=input_ids, attention_mask=attention_mask, **kwargs
            )
        finally:
            row_scale[0] = None

    handle = _blocks(model)[refusal.layer - 1].register_forward_hook(add_direction)
    model.generate = generate
    try:
        yield model
    finally:
        handle.remove()
        del model.generate  # the instance attribute; the class's method shows again
