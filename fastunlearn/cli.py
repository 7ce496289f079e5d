"""Command line: ``fastunlearn <command>`` or ``python -m fastunlearn <command>``.

    fastunlearn unlearn --config run.yaml [--set train.max_steps=50 ...] [--resume]
    fastunlearn generate --config run.yaml      # sample WPN negatives first
    fastunlearn demo [--set train.max_steps=10 ...]         # before/after on the default model
    fastunlearn eval --model runs/demo/final [--harmful FILE --benign FILE --text FILE]
    fastunlearn copyright [--text FILE --retain FILE --heldout FILE]   # implant, unlearn, leakage

A config is a YAML file, or a bundled one named ``fastunlearn:configs/NAME.yaml``. Under the
DeepSpeed launcher: ``deepspeed --num_gpus 8 --module fastunlearn unlearn --config ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fastunlearn.engine.config import JUDGES, UnlearnConfig
from fastunlearn.engine.safety import StorageFullError, TrainingDivergedError
from fastunlearn.recipes.copyright_config import RETAIN_TERMS, UNLEARN_OBJECTIVES, CopyrightConfig
from fastunlearn.resources import bundled_configs, resolve_path

# Bad input the user can fix (ConfigError and CheckpointMismatchError are ValueErrors):
# reported in one line, without a traceback. The heavy imports (torch, transformers, ...)
# happen inside the commands, so that --help answers at once.
USER_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    NotADirectoryError,
    ValueError,
    TrainingDivergedError,
    StorageFullError,
)

# The optional dependencies a command may miss, by the extra that installs them.
EXTRAS = {
    "train": ("transformers", "peft", "datasets", "omegaconf", "safetensors", "numpy", "tqdm"),
    "eval": ("matplotlib", "rouge_score"),
    "demo": ("gguf",),
    "deepspeed": ("deepspeed", "accelerate"),
}


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        help="run config (YAML): a file, or a bundled one: " + ", ".join(bundled_configs()),
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.max_steps=10 lora.enabled=true",
    )


def _load(args: argparse.Namespace) -> UnlearnConfig:
    return UnlearnConfig.load(args.config, args.overrides)


def run_unlearn(args: argparse.Namespace) -> int:
    from fastunlearn.engine import Unlearner

    unlearner = Unlearner(_load(args))
    final = unlearner.train(resume=args.resume)
    if unlearner.is_main_process:
        print(f"unlearned model written to {final}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from fastunlearn.engine.generation import generate_configured
    from fastunlearn.recipes.demo import answered

    for path in generate_configured(_load(args), answers=answered):
        print(f"written: {path}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import logging

    from fastunlearn.recipes.demo import DEMO_CONFIG, demo_eval_suite, run_demo

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    overrides = [*args.overrides] + (
        [f"evaluation.max_new_tokens={args.max_new_tokens}"]
        if args.max_new_tokens is not None
        else []
    )
    config = UnlearnConfig.load(args.config or DEMO_CONFIG, overrides)
    result = run_demo(config, demo_eval_suite(config.evaluation, args.adversarial))
    # The tables (headline metrics and the four response classes), not the quoted samples.
    print(
        result["report"]["markdown"].read_text(encoding="utf-8").split("\n## Sample responses")[0]
    )
    print(
        f"report and plots in {config.train.output_dir}; unlearned model in {result['final']}; "
        f"wall time {result['timings']['total']:.0f} s"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import json

    from fastunlearn.data import read_corpus, read_prompts
    from fastunlearn.eval import EvalSuite, build_judge, evaluate, read_benign_sets
    from fastunlearn.models import bf16_autocast, load_default_model, load_model

    if args.output:
        _check_writable(Path(args.output))
    benign, lookalike = read_benign_sets(_data(args.benign, "benign_eval.jsonl"))
    suite = EvalSuite(
        harmful_prompts=read_prompts(_data(args.harmful, "harmful_eval.jsonl")),
        benign_prompts=benign,
        lookalike_prompts=lookalike,
        heldout_texts=read_corpus(_data(args.text, "normal_text_eval.jsonl")),
        ood_prompts=read_prompts(_data(args.ood, "harmful_ood.jsonl"))
        if args.ood != "none"
        else (),
        judge=build_judge(args.judge, args.judge_model, args.judge_template, args.harmful_label),
        max_new_tokens=args.max_new_tokens,
        lm_eval_tasks=(),
        **({} if args.adversarial else {"adversarial_templates": {}}),
    )
    model, tokenizer = load_default_model() if args.model == "default" else load_model(args.model)
    with bf16_autocast(model, args.bf16):
        result = evaluate(model, tokenizer, suite)
    summary = {
        key: result[key]
        for key in (
            "judge",
            "harmless_rate",
            "over_refusal_rate",
            "lookalike_over_refusal_rate",
            "perplexity",
            "robustness",
            "classes",
        )
    }
    print(json.dumps(summary, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _data(path: str | None, bundled: str) -> Path:
    """An input file given on the command line, else the bundled demo file ``bundled``."""
    return resolve_path(path or f"fastunlearn:demo_data/{bundled}")


def _check_writable(path: Path) -> None:
    """Fail before the work, not after it, when a result file cannot be written."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    if (
        path.is_dir()
        or not os.access(folder, os.W_OK)
        or (path.exists() and not os.access(path, os.W_OK))
    ):
        raise ValueError(f"cannot write {path}: not a writable file location")


def run_copyright(args: argparse.Namespace) -> int:
    import json

    from fastunlearn.data import read_corpus
    from fastunlearn.models import load_default_model, load_model
    from fastunlearn.recipes.copyright import run_copyright

    if args.output:
        _check_writable(Path(args.output))
    config = CopyrightConfig(
        implant_steps=args.implant_steps,
        unlearn_steps=args.unlearn_steps,
        implant_retain=args.implant_retain,
        objective=args.objective,
        retain=args.retain_term,
        eval_every=args.eval_every,
        max_windows=args.max_windows,
    )
    forget = read_corpus(_data(args.text, "story.txt"))
    retain = read_corpus(_data(args.retain, "normal_text_train.jsonl"))
    heldout = read_corpus(_data(args.heldout, "normal_text_eval.jsonl"))
    model, tokenizer = load_default_model() if args.model == "default" else load_model(args.model)
    result = run_copyright(
        model,
        tokenizer,
        forget,
        retain,
        config,
        heldout_texts=heldout,
        log=lambda row: print(json.dumps(row), flush=True),
    )
    print(json.dumps(result.stages, indent=2))
    if args.output:
        Path(args.output).write_text(
            json.dumps({"stages": result.stages, "history": result.history}, indent=2) + "\n",
            encoding="utf-8",
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastunlearn", description="Make a language model forget."
    )
    # The deepspeed launcher passes --local_rank=N before the command; the rank is read
    # from the environment instead.
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    unlearn = commands.add_parser("unlearn", help="run an unlearning job from a config file")
    _add_config_arguments(unlearn)
    unlearn.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in train.output_dir",
    )
    unlearn.set_defaults(handler=run_unlearn)

    generate = commands.add_parser(
        "generate",
        help="sample WPN negatives into data.negatives and the model's own answers to "
        "data.benign into data.benign_answers",
    )
    _add_config_arguments(generate)
    generate.set_defaults(handler=run_generate)

    demo = commands.add_parser(
        "demo", help="evaluate, unlearn and evaluate the default model; before/after report"
    )
    demo.add_argument(
        "--config", default=None, help="run config (default: fastunlearn:configs/demo.yaml)"
    )
    demo.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.max_steps=10",
    )
    demo.add_argument(
        "--max-new-tokens",
        type=int,
        help="greedy tokens per evaluation response "
        "(default: the config's evaluation.max_new_tokens)",
    )
    demo.add_argument(
        "--adversarial", action="store_true", help="also evaluate the adversarial prompt sets"
    )
    demo.set_defaults(handler=run_demo)

    evaluation = commands.add_parser(
        "eval", help="evaluate a model folder on harmful/benign prompts and text"
    )
    evaluation.add_argument(
        "--model", required=True, help='model folder (from_pretrained) or "default"'
    )
    evaluation.add_argument("--harmful", help="harmful prompts (default: the demo's held-out set)")
    evaluation.add_argument(
        "--benign",
        help="benign prompts; rows with a true `lookalike` column form the look-alike set "
        "(default: the demo's held-out set)",
    )
    evaluation.add_argument(
        "--ood", help='out-of-distribution harmful prompts (default: the demo\'s; "none": skip)'
    )
    evaluation.add_argument(
        "--text", help="normal text for perplexity (default: the demo's held-out text)"
    )
    evaluation.add_argument(
        "--max-new-tokens", type=int, default=32, help="greedy tokens per response"
    )
    evaluation.add_argument(
        "--judge",
        choices=JUDGES,
        default="rules",
        help="who decides harmless rates (response classes always come from the rules)",
    )
    evaluation.add_argument(
        "--judge-model",
        help='generative: a local causal LM folder or "default"; '
        "classifier: a local sequence-classification folder",
    )
    evaluation.add_argument(
        "--judge-template", help="generative judge: a text file with {prompt} and {response}"
    )
    evaluation.add_argument(
        "--harmful-label",
        nargs="+",
        default=["harmful"],
        help="classifier judge: the label name(s) that mean harmful",
    )
    evaluation.add_argument(
        "--adversarial", action="store_true", help="also evaluate the adversarial prompt sets"
    )
    evaluation.add_argument(
        "--bf16",
        action="store_true",
        help="generate under bfloat16 autocast (about twice as fast on CPUs with bf16 units)",
    )
    evaluation.add_argument(
        "--output", help="write the full result (every response) to this JSON file"
    )
    evaluation.set_defaults(handler=run_eval)

    copyright_parser = commands.add_parser(
        "copyright", help="implant a text with LoRA, unlearn it, report leakage per stage"
    )
    copyright_parser.add_argument(
        "--model", default="default", help='model folder (from_pretrained) or "default"'
    )
    copyright_parser.add_argument(
        "--text", help="text to implant and unlearn (default: the demo story)"
    )
    copyright_parser.add_argument(
        "--retain", help="retain text for unlearning (default: the demo's normal text)"
    )
    copyright_parser.add_argument(
        "--heldout", help="held-out text for perplexity (default: the demo's held-out text)"
    )
    copyright_parser.add_argument(
        "--implant-steps", type=int, default=CopyrightConfig.implant_steps
    )
    copyright_parser.add_argument(
        "--implant-retain",
        choices=RETAIN_TERMS,
        default=CopyrightConfig.implant_retain,
        help="retain term while implanting (kl: to the original model)",
    )
    copyright_parser.add_argument(
        "--unlearn-steps", type=int, default=CopyrightConfig.unlearn_steps
    )
    copyright_parser.add_argument(
        "--objective", choices=UNLEARN_OBJECTIVES, default=CopyrightConfig.objective
    )
    copyright_parser.add_argument(
        "--retain-term", choices=RETAIN_TERMS, default=CopyrightConfig.retain
    )
    copyright_parser.add_argument(
        "--eval-every",
        type=int,
        default=CopyrightConfig.eval_every,
        help="leakage every N steps of each stage (0: only between stages)",
    )
    copyright_parser.add_argument(
        "--max-windows",
        type=int,
        default=CopyrightConfig.max_windows,
        help="leakage windows scored per evaluation",
    )
    copyright_parser.add_argument("--output", help="write stages and history to this JSON file")
    copyright_parser.set_defaults(handler=run_copyright)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as error:
        print(f"fastunlearn {args.command}: error: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        extra = next((name for name, modules in EXTRAS.items() if error.name in modules), None)
        if extra is None:
            raise
        print(
            f"fastunlearn {args.command}: error: needs {error.name}, which the {extra!r} extra "
            f"installs: pip install 'fastunlearn[{extra}]'",
            file=sys.stderr,
        )
        return 1
