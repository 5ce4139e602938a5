"""Run the benchmarks: `python -m bench [--only NAME ...]`.

stdout carries one JSON object per figure and nothing else; progress and errors go
to stderr. A missed target is a result (`"met": false`), not a failure: the exit
status is 0 unless a benchmark could not produce its figure at all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from bench.common import Result, emit, log

# Module per benchmark, in run order. The cheap, in-process ones go before the
# local stack, which starts servers that compete for the same two cores.
MODULES = ("cold_start", "cold_ping", "ingest", "ingest_real", "geofence", "driver_reports", "eta", "route_opt",
           "tracking_page", "console_page", "rss", "custody", "lookup", "pipeline_cost", "analytics",
           "console_fleet", "e2e", "pipeline_e2e", "pipeline_fleet", "notify_e2e", "messaging_e2e", "local_load")


def main(argv: list[str] | None = None) -> int:
    modules = {name: importlib.import_module(f"bench.{name}") for name in MODULES}
    by_figure = {figure: name for name, module in modules.items() for figure in module.NAMES}
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run the Doorstep benchmarks.")
    parser.add_argument("--only", action="append", metavar="NAME", choices=sorted({*MODULES, *by_figure}),
                        help="a figure or module name; repeatable (default: all)")
    args = parser.parse_args(argv)
    chosen = args.only or list(MODULES)
    wanted = {by_figure.get(n, n) for n in chosen}
    # A module name prints all its figures; a figure name prints just that one.
    shown = {f for n in chosen for f in (modules[n].NAMES if n in modules else (n,))}

    failed = False
    for name in MODULES:
        if name not in wanted:
            continue
        log(f"running {name}")
        try:
            results: list[Result] = [r if isinstance(r, Result) else Result(**r) for r in modules[name].run()]
        except Exception as exc:
            # Loud on stderr, still a JSON line on stdout so a reader of the
            # figures sees which one is missing and why.
            traceback.print_exc()
            failed = True
            for figure in modules[name].NAMES:
                emit(Result(figure, None, "", None, extra={"error": f"{type(exc).__name__}: {exc}"[:500]}))
            continue
        for result in results:
            if result.name in shown:
                emit(result)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
