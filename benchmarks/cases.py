"""Benchmark workloads, free of pytest so that the memory worker can rebuild them in its process.

A ``Case`` names a builder and its JSON-able arguments. ``build(case)`` returns a ``Workload``:
``run()`` does one timed unit of work (forward + backward of an op, or one training step) on
inputs built beforehand, and ``info`` holds what the harness records next to the timing,
including the per-call counts ("tokens", "flop", "bytes") it turns into rates.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fastunlearn.ops import (
    linear_nll,
    npair_loss,
    position_weighted_mean_pool,
    reference_npair_loss,
    reference_position_weighted_mean_pool,
)
from fastunlearn.ops.backend import select_backend

IGNORE_INDEX = -100
TEMPERATURE = 0.1

FASTUNLEARN_IMPLS = ("fastunlearn-triton", "fastunlearn-cpp", "fastunlearn-torch")
OP_IMPLS = FASTUNLEARN_IMPLS + ("eager", "compiled")
# The opt-in Triton kernels of linear_nll (FASTUNLEARN_LINEAR_NLL_KERNEL, docs/backends.md),
# impl name -> kernel name; timed on CUDA only, next to the default ("fastunlearn-triton").
LINEAR_NLL_KERNEL_IMPLS = {
    "fastunlearn-triton-epilogue": "epilogue",
    "fastunlearn-triton-epilogue-single": "epilogue-single",
}
LINEAR_NLL_IMPLS = OP_IMPLS + tuple(LINEAR_NLL_KERNEL_IMPLS) + ("liger", "cce")
STEP_IMPLS = ("fastunlearn-fused", "hf-logits")
# (module, attribute, PyPI name) of the fused linear cross-entropy peers.
PEERS = {
    "liger": ("liger_kernel.transformers", "LigerFusedLinearCrossEntropyLoss", "liger-kernel"),
    "cce": ("cut_cross_entropy", "linear_cross_entropy", "cut-cross-entropy"),
}
# Implementations whose first call can fail because of the machine rather than of the code
# under test (inductor without a working C++ toolchain, a peer's kernels without a GPU):
# such a failure skips the case with its reason instead of failing the suite.
MACHINE_DEPENDENT_IMPLS = ("compiled", "liger", "cce")

# Real OPT dimensions (every OPT checkpoint has the 50272-token vocabulary); "opt-tiny" keeps
# the quick mode fast.
OPT_SHAPES = {
    "opt-tiny": dict(
        hidden_size=64, num_hidden_layers=2, ffn_dim=256, num_attention_heads=4, vocab_size=1024
    ),
    "opt-125m": dict(
        hidden_size=768,
        num_hidden_layers=12,
        ffn_dim=3072,
        num_attention_heads=12,
        vocab_size=50272,
    ),
    "opt-1.3b": dict(
        hidden_size=2048,
        num_hidden_layers=24,
        ffn_dim=8192,
        num_attention_heads=32,
        vocab_size=50272,
    ),
    "opt-2.7b": dict(
        hidden_size=2560,
        num_hidden_layers=32,
        ffn_dim=10240,
        num_attention_heads=32,
        vocab_size=50272,
    ),
    "opt-6.7b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        ffn_dim=16384,
        num_attention_heads=32,
        vocab_size=50272,
    ),
}


class Unavailable(Exception):
    """The implementation cannot run on this machine; the message (the skip reason) says why."""


@dataclasses.dataclass(frozen=True)
class Case:
    builder: str
    kwargs: dict

    @property
    def impl(self) -> str | None:
        return self.kwargs.get("impl")

    @property
    def shape_label(self) -> str:
        """Everything but the implementation: the cases one group compares share it."""
        return " ".join(f"{key}={value}" for key, value in self.kwargs.items() if key != "impl")


@dataclasses.dataclass
class Workload:
    run: Callable[[], object]
    info: dict


def build(case: Case) -> Workload:
    workload = BUILDERS[case.builder](**case.kwargs)
    if case.impl in MACHINE_DEPENDENT_IMPLS:
        try:
            workload.run()
        except Exception as error:  # whatever the toolchain or driver raises
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise Unavailable(
                f"{case.impl} failed on this machine: {type(error).__name__}: {first_line}"
            ) from error
    return workload


def _random(
    shape,
    dtype: str,
    device: str,
    generator: torch.Generator,
    scale: float = 1.0,
    requires_grad: bool = False,
) -> torch.Tensor:
    values = torch.randn(shape, generator=generator) * scale
    return values.to(device=device, dtype=getattr(torch, dtype)).requires_grad_(requires_grad)


def _element_size(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


def _fastunlearn_backend(impl: str, device: str) -> str:
    backend = impl.removeprefix("fastunlearn-")
    if backend == "triton" and device != "cuda":
        # TRITON_INTERPRET=1 runs the kernels on CPU to check them; its timings mean nothing.
        raise Unavailable(
            "fastunlearn-triton is timed on CUDA only (the Triton interpreter is for correctness)"
        )
    try:
        return select_backend(torch.device(device), backend)
    except RuntimeError as error:
        raise Unavailable(str(error)) from error


def _op_implementation(
    impl: str, device: str, fused: Callable, eager: Callable
) -> tuple[Callable, str | None]:
    """(callable, fastunlearn backend or None) for the fastunlearn-*, eager and compiled impls."""
    if impl in FASTUNLEARN_IMPLS:
        backend = _fastunlearn_backend(impl, device)
        return functools.partial(fused, backend=backend), backend
    if impl == "eager":
        return eager, None
    if impl == "compiled":
        return torch.compile(eager), None
    raise ValueError(f"unknown implementation {impl!r}")


def _peer(impl: str, device: str):
    module, attribute, package = PEERS[impl]
    try:
        found = getattr(importlib.import_module(module), attribute)
    except Exception as error:  # a broken install can raise anything at import
        raise Unavailable(
            f"{package} not importable ({type(error).__name__}: {error}); pip install {package}"
        ) from error
    if device != "cuda":
        raise Unavailable(
            f"{package} runs its Triton kernels on CUDA only; this run is on {device}"
        )
    return found


def _span_mask(rows: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """One contiguous masked-in span per row, of random start and length (never empty)."""
    start = torch.randint(0, max(1, length // 2), (rows, 1), generator=generator)
    span = torch.randint(1, length + 1, (rows, 1), generator=generator).clamp_max(length - start)
    positions = torch.arange(length)[None, :]
    return (positions >= start) & (positions < start + span)


def pooling(impl: str, device: str, dtype: str, batch: int, seq: int, dim: int) -> Workload:
    generator = torch.Generator().manual_seed(0)
    hidden = _random((batch, seq, dim), dtype, device, generator, requires_grad=True)
    mask = _span_mask(batch, seq, generator).to(device)
    grad_pooled = _random((batch, dim), dtype, device, generator)
    pool, backend = _op_implementation(
        impl, device, position_weighted_mean_pool, reference_position_weighted_mean_pool
    )

    def run():
        return torch.autograd.grad(pool(hidden, mask), hidden, grad_pooled)

    size = _element_size(dtype)
    # Forward reads hidden and the mask and writes pooled; backward reads grad_pooled and
    # writes grad_hidden: the traffic a bandwidth-bound kernel cannot avoid.
    traffic = (
        2 * batch * seq * dim * size + batch * seq * mask.element_size() + 2 * batch * dim * size
    )
    return Workload(run, dict(impl=impl, backend=backend, tokens=batch * seq, bytes=traffic))


def npair(impl: str, device: str, dtype: str, batch: int, cands: int, dim: int) -> Workload:
    generator = torch.Generator().manual_seed(0)
    anchor = _random((batch, dim), dtype, device, generator, requires_grad=True)
    cand = _random((batch, cands, dim), dtype, device, generator, requires_grad=True)
    loss_fn, backend = _op_implementation(
        impl,
        device,
        functools.partial(npair_loss, temperature=TEMPERATURE),
        lambda a, c: reference_npair_loss(a, c, TEMPERATURE)[0],
    )

    def run():
        return torch.autograd.grad(loss_fn(anchor, cand), (anchor, cand))

    traffic = (
        2 * (batch + batch * cands) * dim * _element_size(dtype)
    )  # inputs read, gradients written
    return Workload(run, dict(impl=impl, backend=backend, bytes=traffic))


def eager_linear_nll(
    x: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, scale: float
) -> torch.Tensor:
    """What users write without a fused op: logits materialised, cross-entropy in fp32."""
    return scale * F.cross_entropy(F.linear(x, weight).float(), labels, ignore_index=IGNORE_INDEX)


def _opt_in_linear_nll(kernel: str, device: str, scale: float) -> Callable:
    """linear_nll on the triton backend with one of its opt-in kernels, selected for the call
    only (the module flag that FASTUNLEARN_LINEAR_NLL_KERNEL sets at import)."""
    if device != "cuda":
        raise Unavailable(
            f"the {kernel!r} linear_nll kernel is timed on CUDA only "
            "(the Triton interpreter is for correctness)"
        )
    _fastunlearn_backend("fastunlearn-triton", device)
    dispatch = importlib.import_module("fastunlearn.ops.triton_kernels.linear_nll")

    def loss(x, weight, labels):
        previous, dispatch.KERNEL = dispatch.KERNEL, kernel
        try:
            # chunk_size=None: the kernel's own default (the single-pass one is larger)
            return linear_nll(
                x, weight, labels, scale=scale, ignore_index=IGNORE_INDEX, backend="triton"
            )
        finally:
            dispatch.KERNEL = previous

    return loss


def _linear_nll_loss(impl: str, device: str, scale: float) -> tuple[Callable, str | None]:
    """loss(x, weight, labels) of one implementation, and its fastunlearn backend if any."""
    if impl in LINEAR_NLL_KERNEL_IMPLS:
        return _opt_in_linear_nll(LINEAR_NLL_KERNEL_IMPLS[impl], device, scale), "triton"
    if impl == "liger":
        liger_loss = _peer(impl, device)(ignore_index=IGNORE_INDEX)
        return (lambda x, weight, labels: scale * liger_loss(weight, x, labels)), None
    if impl == "cce":
        cce_loss = _peer(impl, device)
        return (
            lambda x, weight, labels: scale * cce_loss(x, weight, labels, ignore_index=IGNORE_INDEX)
        ), None
    fused = functools.partial(linear_nll, scale=scale, ignore_index=IGNORE_INDEX)
    return _op_implementation(impl, device, fused, functools.partial(eager_linear_nll, scale=scale))


def linear_nll_case(
    impl: str, device: str, dtype: str, tokens: int, hidden: int, vocab: int, scale: float
) -> Workload:
    generator = torch.Generator().manual_seed(0)
    x = _random((tokens, hidden), dtype, device, generator, requires_grad=True)
    # Scaled so that the logits are O(1), as in a trained model.
    weight = _random(
        (vocab, hidden), dtype, device, generator, scale=hidden**-0.5, requires_grad=True
    )
    labels = torch.randint(0, vocab, (tokens,), generator=generator)
    labels[::8] = IGNORE_INDEX  # as prompt tokens are in a real batch
    labels = labels.to(device)
    loss_fn, backend = _linear_nll_loss(impl, device, scale)

    def run():
        return torch.autograd.grad(loss_fn(x, weight, labels), (x, weight))

    # Forward x W^T, backward dlogits W and dlogits^T x: 2 N H V each.
    return Workload(
        run, dict(impl=impl, backend=backend, tokens=tokens, flop=6 * tokens * hidden * vocab)
    )


def matmul(device: str, dtype: str, size: int) -> Workload:
    generator = torch.Generator().manual_seed(0)
    a = _random((size, size), dtype, device, generator)
    b = _random((size, size), dtype, device, generator)
    return Workload(lambda: a @ b, dict(kind="matmul", flop=2 * size**3))


def copy(device: str, mebibytes: int) -> Workload:
    source = torch.ones(mebibytes << 20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    return Workload(lambda: target.copy_(source), dict(kind="copy", bytes=2 * source.numel()))


@dataclasses.dataclass
class UnlearnBatch:
    """prompts x (1 + negatives) sequences [prompt ; response], candidate 0 the harmless one."""

    ids: torch.Tensor  # [S, T]
    attention: torch.Tensor  # [S, T]
    prompt_mask: torch.Tensor  # [prompts, T]: the anchor's span in each prompt's first sequence
    response_mask: torch.Tensor  # [S, T]
    ascent_labels: torch.Tensor  # [prompts, negatives, T - 1]: next tokens of harmful responses
    prompts: int
    candidates: int


def _unlearn_batch(vocab, device, prompts, negatives, prompt_len, response_len) -> UnlearnBatch:
    generator = torch.Generator().manual_seed(0)
    candidates = 1 + negatives
    length = prompt_len + response_len
    ids = torch.randint(2, vocab, (prompts * candidates, length), generator=generator)
    in_response = torch.arange(length) >= prompt_len
    response_mask = in_response.expand(prompts * candidates, length)
    next_ids = ids.view(prompts, candidates, length)[:, 1:, 1:]
    ascent_labels = torch.where(in_response[1:], next_ids, torch.full_like(next_ids, IGNORE_INDEX))
    return UnlearnBatch(
        ids=ids.to(device),
        attention=torch.ones_like(ids).to(device),
        prompt_mask=(~in_response).expand(prompts, length).to(device),
        response_mask=response_mask.to(device),
        ascent_labels=ascent_labels.reshape(-1).to(device),
        prompts=prompts,
        candidates=candidates,
    )


def _wpn_loss(hidden, batch: UnlearnBatch, pool, pair_loss) -> torch.Tensor:
    per_prompt = hidden.view(batch.prompts, batch.candidates, *hidden.shape[1:])
    anchor = pool(per_prompt[:, 0], batch.prompt_mask)
    cand = pool(hidden, batch.response_mask).view(batch.prompts, batch.candidates, -1)
    return pair_loss(anchor, cand)


def _harmful_positions(tensor, batch: UnlearnBatch) -> torch.Tensor:
    """Rows of the harmful sequences' positions that predict a next token, flattened."""
    per_prompt = tensor.view(batch.prompts, batch.candidates, *tensor.shape[1:])
    return per_prompt[:, 1:, :-1].reshape(-1, tensor.shape[-1])


def fused_unlearn_loss(lm, batch: UnlearnBatch) -> torch.Tensor:
    """WPN + gradient ascent from hidden states: logits never exist outside linear_nll's chunks."""
    hidden = lm.model.decoder(input_ids=batch.ids, attention_mask=batch.attention).last_hidden_state
    wpn = _wpn_loss(
        hidden,
        batch,
        position_weighted_mean_pool,
        functools.partial(npair_loss, temperature=TEMPERATURE),
    )
    ascent = linear_nll(
        _harmful_positions(hidden, batch),
        lm.lm_head.weight,
        batch.ascent_labels,
        scale=-1.0,
        ignore_index=IGNORE_INDEX,
    )
    return wpn + ascent


def logits_unlearn_loss(lm, batch: UnlearnBatch) -> torch.Tensor:
    """The same loss written with the model's own logits and eager pooling / N-pair."""
    out = lm(input_ids=batch.ids, attention_mask=batch.attention, output_hidden_states=True)
    wpn = _wpn_loss(
        out.hidden_states[-1],
        batch,
        reference_position_weighted_mean_pool,
        lambda a, c: reference_npair_loss(a, c, TEMPERATURE)[0],
    )
    logits = _harmful_positions(out.logits, batch).float()
    ascent = -F.cross_entropy(logits, batch.ascent_labels, ignore_index=IGNORE_INDEX)
    return wpn + ascent


def unlearn_step(
    impl: str,
    finetune: str,
    model: str,
    device: str,
    dtype: str,
    prompts: int,
    negatives: int,
    prompt_len: int,
    response_len: int,
) -> Workload:
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    shape = OPT_SHAPES[model]
    # Dropout off so that both variants compute the very same loss from the same weights.
    config = OPTConfig(
        **shape,
        word_embed_proj_dim=shape["hidden_size"],
        max_position_embeddings=2048,
        dropout=0.0,
        attention_dropout=0.0,
    )
    with torch.device(device):  # initialised where it runs: minutes faster for billions of weights
        lm = OPTForCausalLM(config)
    lm = lm.to(dtype=getattr(torch, dtype)).train()
    if finetune == "lora":
        from peft import LoraConfig, get_peft_model

        # Adapters are injected into lm in place and everything else is frozen, the head included.
        get_peft_model(lm, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    elif finetune != "full":
        raise ValueError(f"finetune must be 'lora' or 'full', got {finetune!r}")
    trainable = [p for p in lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    batch = _unlearn_batch(
        shape["vocab_size"], device, prompts, negatives, prompt_len, response_len
    )
    loss_fn = {"fastunlearn-fused": fused_unlearn_loss, "hf-logits": logits_unlearn_loss}[impl]

    def run():
        loss = loss_fn(lm, batch)
        loss.backward()
        optimizer.step()
        # Gradients are freed here, not at the next step: a step's peak memory includes them.
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return Workload(
        run,
        dict(
            impl=impl, tokens=batch.ids.numel(), trainable_params=sum(p.numel() for p in trainable)
        ),
    )


BUILDERS = {
    "pooling": pooling,
    "npair": npair,
    "linear_nll": linear_nll_case,
    "matmul": matmul,
    "copy": copy,
    "unlearn_step": unlearn_step,
}
