"""``dim-bench SCENARIO [--quick] [--profile] --out DIR``: run benchmarks, write the results.

SCENARIO is one of :data:`dim.bench.scenarios.SCENARIOS` or ``all``.  The results go to
DIR/results.json, DIR/results.md and PNG plots in DIR; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from typing import Any
from pathlib import Path

from dim.bench import report
from dim.bench.scenarios import SCENARIOS, Context


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios and write results.json, results.md and the plots."""
    parser = argparse.ArgumentParser(prog="dim-bench", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: `all` finishes in under 3 minutes")
    parser.add_argument("--profile", action="store_true",
                        help="run the chat_same_node node under cProfile (twistd --profiler)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(quick=args.quick, out=out, profile=args.profile, log=_log)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": report.machine(), "mode": "quick" if args.quick else "full",
        "command": "dim-bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scenarios": ctx.results}
    for name in names:
        if name in ctx.results:
            continue
        _log(f"--- {name}")
        t0 = time.monotonic()
        try:
            ctx.results[name] = SCENARIOS[name](ctx)
        except Exception as e:
            _log(traceback.format_exc())
            ctx.results[name] = report.failed(f"{type(e).__name__}: {e}"[:2000])
        ctx.results[name]["elapsed_s"] = round(time.monotonic() - t0, 1)
    # Keep the scenario order stable in the output.
    results["scenarios"] = {n: ctx.results[n] for n in [*SCENARIOS] if n in ctx.results}
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    problems = report.check_schema(results)
    if problems:
        results["schema_problems"] = problems
    report.write_json(results, out)
    report.write_markdown(results, out)
    try:
        report.plot(results, out)
    except Exception:
        _log("plotting failed:\n" + traceback.format_exc())
    _log(f"wrote {out / 'results.json'} and {out / 'results.md'} "
         f"in {results['elapsed_s']}s")
    print(report.markdown(results))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
