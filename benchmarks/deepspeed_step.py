"""WPN + gradient-ascent optimizer steps on the DeepSpeed engine the trainer builds, fused ops
against the model's own loss on materialised logits; JSON rows of tokens/s and peak memory.

Run it through the DeepSpeed launcher (one GPU):

    deepspeed --num_gpus 1 benchmarks/deepspeed_step.py --models opt-1.3b,opt-2.7b \\
        --configs zero2,zero3 --out OUT
    deepspeed --num_gpus 1 benchmarks/deepspeed_step.py --models opt-6.7b \\
        --configs zero3_offload --warmup 1 --steps 1 --out OUT
    DS_ACCELERATOR=cpu deepspeed --num_gpus 1 benchmarks/deepspeed_step.py --tiny --out /tmp/x

Models are random-initialised OPTs of the real sizes, built from OPTConfig (nothing is
downloaded; weights do not change speed). ``--configs`` names the engine's DeepSpeed configs
(fastunlearn/configs/deepspeed/<name>.json), filled from a run config exactly as the
Unlearner fills them (``engine.distributed``); the model is wrapped in the engine's
``ObjectiveModule`` (the output head registered as an external parameter under ZeRO-3) and
stepped by its ``DeepSpeedBackend`` (forward, backward + step, grad norm), full-parameter
training with the engine's AdamW.

The step's loss, on P prompts x (1 + N) sequences [prompt ; response] (candidate 0 the
harmless one), is  npair(pool(prompt), pool(responses)) - mean NLL(harmful response tokens):

* ``fastunlearn-fused``: the decoder's hidden states into position_weighted_mean_pool,
  npair_loss and linear_nll(scale=-1) (the logits never exist beyond linear_nll's chunks);
* ``hf-logits``: ``model(..., labels=...)``, the model's own cross-entropy on its
  materialised logits (negated), with eager pooling and N-pair on its last hidden states.

Both compute the same loss from the same weights; each case records both losses before any
update (``initial_loss``) so that a reader can check. Each row (one per case and
implementation) goes to OUT/deepspeed_step.jsonl, appended; a case that fails or does not fit
writes a row with ``error`` or ``skipped`` and the next case runs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.cases import OPT_SHAPES  # noqa: E402 - real OPT dimensions, and opt-tiny
from fastunlearn.engine import DataConfig, TrainConfig, UnlearnConfig, distributed  # noqa: E402
from fastunlearn.models import CausalLMAdapter  # noqa: E402
from fastunlearn.objectives import (  # noqa: E402
    ContrastiveBatch,
    ObjectiveOutput,
    PairedBatch,
    Term,
    WeightedSum,
)
from fastunlearn.ops import (  # noqa: E402
    linear_nll,
    npair_loss,
    position_weighted_mean_pool,
    reference_npair_loss,
    reference_position_weighted_mean_pool,
)

IGNORE_INDEX = -100
TEMPERATURE = 0.1
IMPLS = ("fastunlearn-fused", "hf-logits")
CONFIGS = ("zero2", "zero3", "zero3_offload")
OUTPUT_NAME = "deepspeed_step.jsonl"
MAX_POSITIONS = 2048
GiB = 1 << 30


def opt_parameter_count(shape: dict) -> int:
    """Parameters of OPTForCausalLM (head tied to the embedding) with these dimensions."""
    h, f, layers, vocab = (
        shape["hidden_size"],
        shape["ffn_dim"],
        shape["num_hidden_layers"],
        shape["vocab_size"],
    )
    attention = 4 * (h * h + h)
    mlp = h * f + f + f * h + h
    norms = 2 * 2 * h
    return vocab * h + (MAX_POSITIONS + 2) * h + layers * (attention + mlp + norms) + 2 * h


# ------------------------------------------------------------------------------ the two losses


def _harmful(tensor: torch.Tensor, prompts: int, candidates: int) -> torch.Tensor:
    """The harmful sequences' rows (candidates 1..N of every prompt), flattened to [P*N, ...]."""
    per_prompt = tensor.view(prompts, candidates, *tensor.shape[1:])
    return per_prompt[:, 1:].reshape(-1, *tensor.shape[1:])


class FusedWPNGA:
    """From the head input: fused pooling + N-pair, and linear_nll(scale=-1) on the harmful
    response tokens (token mean) against the head weight."""

    def __init__(self, ga_labels: torch.Tensor):
        self.ga_labels = ga_labels  # [P*N*(T-1)]: next token of harmful responses, else ignored

    def __call__(self, model: CausalLMAdapter, batch: ContrastiveBatch) -> ObjectiveOutput:
        k, prompts = batch.num_candidates, batch.num_prompts
        hidden = model.hidden_states(batch.input_ids, batch.attention_mask)
        anchor = position_weighted_mean_pool(hidden[::k], batch.prompt_mask[::k])
        cand = position_weighted_mean_pool(hidden, batch.response_mask).view(prompts, k, -1)
        wpn = npair_loss(anchor, cand, TEMPERATURE)
        head = model.output_head()
        positions = _harmful(hidden, prompts, k)[:, :-1].reshape(-1, hidden.shape[-1])
        ascent = linear_nll(
            positions,
            head.weight,
            self.ga_labels,
            head.bias,
            scale=-1.0,
            ignore_index=IGNORE_INDEX,
        )
        return ObjectiveOutput(wpn + ascent, {"wpn": wpn.detach(), "ga_nll": -ascent.detach()})


class LogitsWPNGA:
    """The model's own loss on its materialised logits (labels only on harmful response
    tokens, so HF's token mean is the same mean), negated; eager pooling and N-pair."""

    def __init__(self, hf_labels: torch.Tensor):
        self.hf_labels = hf_labels  # [S, T]: input ids on harmful responses, else ignored

    def __call__(self, model: CausalLMAdapter, batch: ContrastiveBatch) -> ObjectiveOutput:
        k, prompts = batch.num_candidates, batch.num_prompts
        out = model.causal_lm(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            labels=self.hf_labels,
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states[-1]
        anchor = reference_position_weighted_mean_pool(hidden[::k], batch.prompt_mask[::k])
        cand = reference_position_weighted_mean_pool(hidden, batch.response_mask)
        wpn = reference_npair_loss(anchor, cand.view(prompts, k, -1), TEMPERATURE)[0]
        ascent = -out.loss.float()
        return ObjectiveOutput(wpn + ascent, {"wpn": wpn.detach(), "ga_nll": -ascent.detach()})


def unlearn_batch(vocab, prompts, negatives, prompt_len, response_len, seed=0):
    """A ContrastiveBatch (checked on the CPU, as the data layer builds them) and the labels of
    both losses. Each group shares its prompt; responses are random tokens."""
    generator = torch.Generator().manual_seed(seed)
    k = 1 + negatives
    length = prompt_len + response_len
    prompt_ids = torch.randint(2, vocab, (prompts, 1, prompt_len), generator=generator)
    response_ids = torch.randint(2, vocab, (prompts, k, response_len), generator=generator)
    ids = torch.cat([prompt_ids.expand(prompts, k, prompt_len), response_ids], dim=2)
    ids = ids.reshape(prompts * k, length)
    in_response = (torch.arange(length) >= prompt_len).expand(prompts * k, length)
    batch = ContrastiveBatch(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        prompt_mask=~in_response.clone(),
        response_mask=in_response.clone(),
        num_candidates=k,
    )
    harmful_row = (torch.arange(prompts * k) % k != 0)[:, None]
    hf_labels = torch.where(in_response & harmful_row, ids, IGNORE_INDEX)
    ga_labels = _harmful(hf_labels, prompts, k)[:, 1:].reshape(-1)
    return batch, ga_labels, hf_labels


# ---------------------------------------------------------------------------------- memory


def mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemoryGuard:
    """Ends the process (exit code 3, after writing ``on_low``'s row) before host memory runs
    out: an offloaded optimizer of billions of parameters can take a whole machine down."""

    def __init__(self, floor_bytes: int, on_low):
        self.floor, self.on_low, self.lowest = floor_bytes, on_low, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.wait(0.25):
            available = mem_available_bytes()
            if available is None:
                return
            self.lowest = available if self.lowest is None else min(self.lowest, available)
            if available < self.floor:
                self.on_low(available)
                os._exit(3)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def offload_plan(ds_config: dict, params: int, policy: str) -> tuple[dict, str | None, str | None]:
    """(config, note, skip reason): with CPU offload, the host holds fp32 master weights,
    fp32 gradients and two AdamW moments (16 bytes a parameter), plus the 16-bit weights
    (2 more) when parameters are offloaded too. If they do not fit in MemAvailable with a
    margin, drop the parameter offload (policy "auto"), else skip the case."""
    zero = ds_config.get("zero_optimization", {})
    if zero.get("offload_optimizer", {}).get("device") != "cpu":
        return ds_config, None, None
    available = mem_available_bytes()
    if available is None:
        return ds_config, "MemAvailable unknown: offload as configured", None
    margin = 8 * GiB
    with_params = params * 18 + margin
    without_params = params * 16 + margin
    offload_params = zero.get("offload_param", {}).get("device") == "cpu"
    if policy == "drop":
        offload_params = False
    need = with_params if offload_params else without_params
    if need <= available:
        note = f"host memory: needs ~{need / GiB:.0f} GiB, {available / GiB:.0f} GiB available"
        if policy == "drop":
            zero.pop("offload_param", None)
            note += "; parameter offload dropped (--offload-param drop)"
        return ds_config, note, None
    if offload_params and policy == "auto" and without_params <= available:
        zero.pop("offload_param", None)
        return (
            ds_config,
            f"parameter offload dropped: weights + optimizer on the host need "
            f"~{with_params / GiB:.0f} GiB, {available / GiB:.0f} GiB available; optimizer "
            f"offload alone ~{without_params / GiB:.0f} GiB",
            None,
        )
    return (
        ds_config,
        None,
        f"not run: CPU offload needs ~{need / GiB:.0f} GiB of host memory, "
        f"{available / GiB:.0f} GiB available",
    )


# ------------------------------------------------------------------------------------ a case


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _environment() -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    for module in ("deepspeed", "transformers", "triton"):
        with contextlib.suppress(Exception):
            info[module] = __import__(module).__version__
    if torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name()
    with contextlib.suppress(Exception):
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return info


def run_case(model_name: str, config_name: str, args, rank: int, world_size: int) -> list[dict]:
    import deepspeed
    from transformers import AutoModelForCausalLM, OPTConfig
    from transformers.integrations import HfDeepSpeedConfig

    from fastunlearn.engine.objective import ObjectiveModule, head_parameters

    shape = OPT_SHAPES[model_name]
    params = opt_parameter_count(shape)
    base = {
        "model": model_name,
        "config": config_name,
        "parameters": params,
        "world_size": world_size,
        "precision": args.precision,
        "prompts": args.prompts,
        "candidates": 1 + args.negatives,
        "seq_len": args.prompt_len + args.response_len,
        "tokens_per_step": args.prompts
        * (1 + args.negatives)
        * (args.prompt_len + args.response_len)
        * world_size,
    }
    run_config = UnlearnConfig(
        data=DataConfig(batch_size=args.prompts, num_negatives=args.negatives),
        train=TrainConfig(
            deepspeed=f"fastunlearn:configs/deepspeed/{config_name}.json",
            bf16=args.precision == "bf16",
            fp16=args.precision == "fp16",
            learning_rate=1e-5,
            max_steps=1000,  # the LR schedule stays near its start over the few steps run
            max_grad_norm=1.0,
            disable_tqdm=True,
        ),
    )
    ds_config = distributed.resolve_deepspeed_config(
        distributed.read_deepspeed_config(run_config),
        run_config,
        world_size,
        run_config.train.deepspeed,
    )
    distributed.fill_hidden_size_keys(ds_config, shape["hidden_size"])
    ds_config, note, skip = offload_plan(ds_config, params, args.offload_param)
    zero = ds_config.get("zero_optimization", {})
    base.update(
        zero_stage=distributed.zero_stage(ds_config),
        offload_optimizer=zero.get("offload_optimizer", {}).get("device"),
        offload_param=zero.get("offload_param", {}).get("device"),
    )
    if note:
        base["note"] = note
    if skip:
        return [dict(base, skipped=skip)]

    torch.manual_seed(0)
    opt_config = OPTConfig(
        **shape,
        word_embed_proj_dim=shape["hidden_size"],
        max_position_embeddings=MAX_POSITIONS,
        dropout=0.0,
        attention_dropout=0.0,
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    device = torch.device(
        f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    )
    started = time.perf_counter()
    zero3 = base["zero_stage"] == 3
    # As the Unlearner loads under ZeRO-3: with HF's DeepSpeed config alive, from_config builds
    # the model sharded as it is created (zero.Init; on the host with parameter offload) and
    # initialises each module's weights gathered. Otherwise it is built where it runs
    # (minutes faster than on the CPU at billions of weights).
    hf_deepspeed_config = HfDeepSpeedConfig(ds_config) if zero3 else None
    with contextlib.nullcontext() if zero3 else torch.device(device):
        model = AutoModelForCausalLM.from_config(opt_config, dtype=dtype)
    model.train()
    adapter = CausalLMAdapter(model)
    batch, ga_labels, hf_labels = unlearn_batch(
        shape["vocab_size"], args.prompts, args.negatives, args.prompt_len, args.response_len
    )
    objectives = {
        "fastunlearn-fused": WeightedSum([Term("wpn_ga", FusedWPNGA(ga_labels), 1.0, "forget")]),
        "hf-logits": WeightedSum([Term("wpn_ga", LogitsWPNGA(hf_labels), 1.0, "forget")]),
    }
    module = ObjectiveModule(
        model, objectives[args.impls[0]], head_parameters(adapter) if zero3 else ()
    )
    # The engine the UnlearnTrainer builds, driven directly: the step alone is timed.
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=ds_config)
    device = engine.device if isinstance(engine.device, torch.device) else torch.device(device)
    paired = PairedBatch(forget=batch).to(engine.device)
    objectives["fastunlearn-fused"].terms[0].objective.ga_labels = ga_labels.to(engine.device)
    objectives["hf-logits"].terms[0].objective.hf_labels = hf_labels.to(engine.device)
    base["setup_s"] = time.perf_counter() - started

    # The same loss from the same weights, before any update: both variants must agree.
    initial = {}
    for impl in args.impls:
        module.objective = objectives[impl]
        with torch.no_grad():
            initial[impl] = engine(paired).loss.float().item()

    rows = []
    for impl in args.impls:
        module.objective = objectives[impl]
        row = dict(base, impl=impl, initial_loss=initial[impl])
        times, peaks, state, grad_norm, loss = [], [], None, None, None
        # The first args.warmup steps compile kernels and allocate the optimizer state.
        for step in range(args.warmup + args.steps):
            _sync(device)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            output = engine(paired)
            engine.backward(output.loss)
            engine.step()
            norm = engine.get_global_grad_norm()
            grad_norm = None if norm is None else float(norm)
            _sync(device)
            elapsed = time.perf_counter() - start
            loss = output.loss.detach().float().item()
            if step < args.warmup:
                continue
            times.append(elapsed)
            if device.type == "cuda":
                state = before
                peaks.append(torch.cuda.max_memory_allocated(device) - before)
        mean = sum(times) / len(times)
        row.update(
            step_s=times,
            mean_step_s=mean,
            tokens_per_s=base["tokens_per_step"] / mean,
            last_loss=loss,
            grad_norm=grad_norm,
            cpu_max_rss_bytes=max_rss_bytes(),
        )
        if device.type == "cuda":
            row.update(
                peak_step_bytes=max(peaks),
                state_bytes=state,
                peak_total_bytes=state + max(peaks),
                max_reserved_bytes=torch.cuda.max_memory_reserved(device),
            )
        rows.append(row)
    with contextlib.suppress(Exception):
        engine.destroy()
    del engine, optimizer, module, model, adapter, hf_deepspeed_config
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------ main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default=None, help=f"of {','.join(OPT_SHAPES)} (default opt-1.3b,opt-2.7b)"
    )
    parser.add_argument(
        "--configs", default=None, help=f"of {','.join(CONFIGS)} (default zero2,zero3)"
    )
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--negatives", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=192)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default=None)
    parser.add_argument(
        "--offload-param",
        choices=("auto", "keep", "drop"),
        default="auto",
        help="auto: drop a config's parameter offload when host memory is short",
    )
    parser.add_argument(
        "--min-free-gib",
        type=float,
        default=4.0,
        help="end the process (a row says so) when MemAvailable drops below this",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="opt-tiny (unless --models), 2 prompts x 3 candidates x 16 tokens, 1 + 2 steps, "
        "every config (unless --configs): checks the wiring on a CPU (DS_ACCELERATOR=cpu)",
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="output folder")
    parser.add_argument(
        "--summarise",
        action="store_true",
        help=f"only print the summary lines of OUT/{OUTPUT_NAME} (no DeepSpeed needed)",
    )
    parser.add_argument("--local_rank", type=int, default=None)  # set by the launcher
    args = parser.parse_args(argv)
    if args.tiny:
        args.models = args.models or "opt-tiny"
        args.configs = args.configs or ",".join(CONFIGS)
        args.prompts, args.negatives, args.prompt_len, args.response_len = 2, 2, 8, 8
        args.warmup, args.steps = 1, 2
    args.models = args.models or "opt-1.3b,opt-2.7b"
    args.configs = args.configs or "zero2,zero3"
    args.models = [name for name in args.models.split(",") if name]
    args.configs = [name for name in args.configs.split(",") if name]
    args.impls = [name for name in args.impls.split(",") if name]
    for name, allowed in (("models", OPT_SHAPES), ("configs", CONFIGS), ("impls", IMPLS)):
        unknown = [value for value in getattr(args, name) if value not in allowed]
        if unknown:
            parser.error(f"--{name}: unknown {unknown}; choose from {list(allowed)}")
    if args.precision is None:
        args.precision = "bf16" if torch.cuda.is_available() else "fp32"
    return args


def summarise(rows: list[dict]) -> list[str]:
    """One line per case: the fused step against the logits step."""
    lines = []
    cases = {}
    for row in rows:
        cases.setdefault((row["model"], row["config"]), {})[row.get("impl")] = row
    for (model, config), by_impl in cases.items():
        fused, logits = by_impl.get("fastunlearn-fused"), by_impl.get("hf-logits")
        head = f"{model} {config}:"
        problem = next(
            (
                row.get("error") or row.get("skipped")
                for row in by_impl.values()
                if "step_s" not in row
            ),
            None,
        )
        if problem:
            lines.append(f"{head} {problem.splitlines()[0]}")
            continue
        parts = [
            f"{impl} {row['tokens_per_s']:.0f} tok/s"
            + (
                f", peak +{row['peak_step_bytes'] / 2**20:.0f} MiB"
                if "peak_step_bytes" in row
                else ""
            )
            for impl, row in by_impl.items()
        ]
        if fused and logits:
            parts.append(f"tokens/s gain {fused['tokens_per_s'] / logits['tokens_per_s']:.2f}x")
            if "peak_step_bytes" in fused:
                parts.append(
                    f"peak ratio {fused['peak_step_bytes'] / logits['peak_step_bytes']:.2f}x"
                )
            a, b = fused["initial_loss"], logits["initial_loss"]
            parts.append(f"initial loss {a:.4f} vs {b:.4f}")
        lines.append(f"{head} " + "; ".join(parts))
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summarise:
        path = Path(args.out) / OUTPUT_NAME
        if not path.is_file():
            print(f"{path}: no DeepSpeed step rows")
            return 1
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for line in summarise(rows):
            print(line)
        return 0
    import deepspeed

    # Plain gloo collectives on CPU: DeepSpeed's shared-memory ones are compiled on first use.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    rank, world_size = distributed.init_process_group()
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    output = out / OUTPUT_NAME
    environment = _environment()
    written: list[dict] = []

    def write(row: dict) -> None:
        if rank != 0:
            return
        row = dict(row, **environment, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
        with output.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        written.append(row)

    failures = 0
    for model_name in args.models:
        for config_name in args.configs:
            current = dict(model=model_name, config=config_name)

            def low_memory(available, current=current):
                write(
                    dict(
                        current,
                        error=f"stopped: host MemAvailable fell to {available / GiB:.1f} GiB "
                        f"(floor {args.min_free_gib} GiB)",
                    )
                )

            print(f"[deepspeed_step] {model_name} {config_name} ...", flush=True)
            try:
                with MemoryGuard(int(args.min_free_gib * GiB), low_memory) as guard:
                    rows = run_case(model_name, config_name, args, rank, world_size)
                for row in rows:
                    if guard.lowest is not None:
                        row["host_mem_available_min_bytes"] = guard.lowest
                    write(row)
            except Exception as error:  # one case failing must not stop the others
                failures += 1
                detail = "".join(traceback.format_exception(error))[-4000:]
                write(dict(current, error=f"{type(error).__name__}: {error}", traceback=detail))
                print(detail, file=sys.stderr, flush=True)
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            for line in summarise(
                [
                    row
                    for row in written
                    if row["model"] == model_name and row["config"] == config_name
                ]
            ):
                print(f"[deepspeed_step] {line}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
