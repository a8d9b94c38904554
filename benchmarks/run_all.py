"""Run every benchmark script in benchmarks/ (bench_*.py) one after the other and collect their tables.

    python benchmarks/run_all.py [--quick] [--only bench_core ...]

Each script runs in its own process (so each measures a fresh interpreter, and one failing does not stop the
others); its stdout (markdown) is echoed and gathered into benchmarks/results/all[_quick].md. Exit status 1 if any
script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Pass --quick to every script (smoke run, minutes).")
    parser.add_argument("--only", nargs="+", default=None, help="Run only these scripts (names with or without .py).")
    args = parser.parse_args()

    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    if args.only:
        wanted = {name.removesuffix(".py") for name in args.only}
        unknown = wanted - {s.stem for s in scripts}
        if unknown:
            parser.error(f"no benchmark named {sorted(unknown)}; found {[s.stem for s in scripts]}")
        scripts = [s for s in scripts if s.stem in wanted]

    sections, failed, durations = [], [], {}
    for script in scripts:
        command = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        print(f"\n===== {script.name}{' --quick' if args.quick else ''} =====\n", flush=True)
        start = time.perf_counter()
        # stderr (progress, warnings) passes through; stdout is the script's report
        process = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=BENCH_DIR.parent)
        durations[script.name] = time.perf_counter() - start
        print(process.stdout, flush=True)
        if process.returncode != 0:
            failed.append(script.name)
            sections.append(f"{process.stdout}\n\n**{script.name} FAILED (exit {process.returncode}).**\n")
        else:
            sections.append(process.stdout)

    summary = "\n".join(
        f"- {name}: {seconds:.0f} s" + (" (FAILED)" if name in failed else "") for name, seconds in durations.items()
    )
    report = "\n\n".join(sections) + f"\n\n## Runtimes\n\n{summary}\n"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / ("all_quick.md" if args.quick else "all.md")
    path.write_text(report)
    print(f"\n===== summary =====\n{summary}\nCollected tables: {path}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
