"""Command line: ``python -m benchmarks [NAME ...] [--setting cpu|full|smoke] [--seeds 0 1 2]``."""
from __future__ import annotations

import argparse
import sys

from .core import SETTINGS, TABLE, benchmarks, load_results, render_table, run_benchmark, save_result


def main(argv: list[str] | None = None) -> int:
    registry = benchmarks()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(registry)}")
    parser.add_argument("--setting", choices=SETTINGS, default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: each benchmark's own (0 1 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1; 0 leaves torch's default, e.g. on a GPU machine)")
    parser.add_argument("--table-only", action="store_true", help="only rewrite RESULTS.md from the saved JSON")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in registry]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(registry)}")
    missing = [n for n in args.names if args.setting not in registry[n].settings]
    if missing:
        parser.error(f"{', '.join(missing)} has no {args.setting!r} setting; its settings: "
                     + "; ".join(f"{n}: {', '.join(registry[n].settings)}" for n in missing))
    if not args.table_only:
        # Without names, every benchmark that has the setting (maml_omniglot has no cpu setting).
        names = args.names or [n for n, b in registry.items() if args.setting in b.settings]
        for name in names:
            record = run_benchmark(registry[name], args.setting, args.seeds, threads=args.threads or None)
            if args.setting != "smoke":
                print(f"wrote {save_result(record)}")
    TABLE.write_text(render_table(load_results(), registry))
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
