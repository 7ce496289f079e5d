"""Command line: ``fastunlearn <command>`` or ``python -m fastunlearn <command>``.

    fastunlearn unlearn --config configs/wpn_lora.yaml [--set train.max_steps=50 ...] [--resume]
    fastunlearn generate --config configs/wpn_lora.yaml     # sample WPN negatives first

Under the DeepSpeed launcher: ``deepspeed --num_gpus 8 --module fastunlearn unlearn --config ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastunlearn.engine import CheckpointMismatchError, ConfigError, UnlearnConfig

# Bad input the user can fix: reported in one line, without a traceback.
USER_ERRORS = (ConfigError, CheckpointMismatchError, FileNotFoundError, FileExistsError, ValueError)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config (YAML); see configs/")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=10 lora.enabled=true")


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
    from fastunlearn.engine.generation import generate_configured_negatives

    path = generate_configured_negatives(_load(args))
    print(f"negatives written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastunlearn", description="Make a language model forget.")
    # The deepspeed launcher passes --local_rank=N before the command; the rank is read
    # from the environment instead.
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    unlearn = commands.add_parser("unlearn", help="run an unlearning job from a config file")
    _add_config_arguments(unlearn)
    unlearn.add_argument("--resume", action="store_true",
                         help="continue from the latest checkpoint in train.output_dir")
    unlearn.set_defaults(handler=run_unlearn)

    generate = commands.add_parser("generate", help="sample WPN negatives from the model into data.negatives")
    _add_config_arguments(generate)
    generate.set_defaults(handler=run_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as error:
        print(f"fastunlearn {args.command}: error: {error}", file=sys.stderr)
        return 1
