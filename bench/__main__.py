"""Run the benchmarks: `python -m bench` runs every `bench/bench_*.py` module's `main()`;
`python -m bench audit` (or `bench_audit`) runs only that one. Extra arguments after `--` go to each
main() as `argv` when it accepts one. Figures go to docs/benchmarks.md, with machine, date and command."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path


def available() -> list[str]:
    return sorted(path.stem.removeprefix("bench_") for path in Path(__file__).parent.glob("bench_*.py"))


def run(name: str, argv: list[str]) -> None:
    module = importlib.import_module(f"bench.bench_{name}")
    main = module.main
    if inspect.signature(main).parameters:
        main(argv)
    else:
        main()


def cli(args: list[str]) -> int:
    if "--" in args:
        split = args.index("--")
        names, extra = args[:split], args[split + 1 :]
    else:
        names, extra = args, []
    if any(name in ("-h", "--help") for name in names):
        print(f"usage: python -m bench [NAME ...] [-- ARGS]; benchmarks: {', '.join(available())}")
        return 0
    names = [name.removeprefix("bench_").removesuffix(".py") for name in names] or available()
    unknown = [name for name in names if name not in available()]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}",
            file=sys.stderr,
        )
        return 2
    for name in names:
        print(f"== bench {name}", flush=True)
        run(name, extra)
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
