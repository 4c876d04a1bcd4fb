"""Mutation testing of the pure core, against the bars of MUTATION.md.

    python .ci/mutation.py                    # every module: machine, config, errors, kraken
    python .ci/mutation.py machine            # one of them (CI runs this one)

It runs mutmut 3 (configured under [tool.mutmut] in pyproject.toml) from a fresh
`mutants/` directory, prints each module's score, lists every survivor with the reason
MUTATION.md gives for it, and exits non-zero when a module is below its bar.  A survivor
that MUTATION.md does not explain is printed as such: either a test is missing, or the
mutant is equivalent and belongs in the list.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# module -> (mutmut's name prefix, the lowest share of mutants killed that passes)
BARS = {
    "machine": ("ccxt_breaker._machine.", 0.95),
    "config": ("ccxt_breaker._config.", 0.90),
    "errors": ("ccxt_breaker._errors.", 0.90),
    "kraken": ("ccxt_breaker._kraken.", 0.90),
}
KILLED = {"killed", "timeout"}  # a mutant that hangs the tests is caught as well
EXPLAINED = re.compile(r"^- `(?P<name>ccxt_breaker\.[^`]+)`: (?P<reason>.+)$")


def explained() -> dict[str, str]:
    """The equivalent mutants MUTATION.md lists, with their reasons."""
    text = (ROOT / "MUTATION.md").read_text(encoding="utf-8")
    return {m["name"]: m["reason"] for line in text.splitlines() if (m := EXPLAINED.match(line))}


def results() -> dict[str, str]:
    """Every mutant's status, as `mutmut results --all true` prints them."""
    out = subprocess.run(
        ["mutmut", "results", "--all", "true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    statuses = {}
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name.startswith("ccxt_breaker."):
            statuses[name] = status
    return statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=", ".join(BARS))
    modules = parser.parse_args(argv).modules or list(BARS)
    unknown = [m for m in modules if m not in BARS]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; choose from {', '.join(BARS)}")

    shutil.rmtree(ROOT / "mutants", ignore_errors=True)  # no result cached from other code
    patterns = [BARS[m][0] + "*" for m in modules]
    run = subprocess.run(["mutmut", "run", *patterns], cwd=ROOT, stdout=subprocess.DEVNULL)
    if run.returncode != 0:
        print(f"mutmut run failed with exit code {run.returncode}", file=sys.stderr)
        return run.returncode

    statuses, reasons = results(), explained()
    failed = False
    for module in modules:
        prefix, bar = BARS[module]
        mine = {n: s for n, s in statuses.items() if n.startswith(prefix)}
        killed = sum(s in KILLED for s in mine.values())
        score = killed / len(mine) if mine else 0.0
        verdict = "PASS" if mine and score >= bar else "FAIL"
        failed |= verdict == "FAIL"
        print(f"{module:8} {killed}/{len(mine)} killed = {score:.1%} (bar {bar:.0%}) {verdict}")
        for name, status in sorted(mine.items()):
            if status not in KILLED:
                why = reasons.get(name, "NOT EXPLAINED in MUTATION.md")
                print(f"    {status:10} {name}: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
