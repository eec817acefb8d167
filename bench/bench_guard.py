"""The cost of guarding a call on the success path: mendflow against tenacity and pybreaker.

Every variant calls the same trivial function many times in one loop, in this one process, and
the loop is timed with ``time.perf_counter_ns`` with the garbage collector off. The variants run
in turn, round after round, and each keeps its best round, so a busy moment of the machine hurts
all of them alike rather than one. The figure per call includes the loop itself, which the bare
call (a) shows; "overhead" subtracts it.

    python bench/bench_guard.py
    python bench/bench_guard.py --iterations 200000 --repeat 5 --write BENCHMARKS.md

Variants: (a) the bare call; (b) mendflow's ``retrying`` block; (b+) the same with a shared
``RetryBudget``; (c) ``retrying`` around ``CircuitBreaker.guard()``; (d) a tenacity ``@retry``
with the same stop, wait and retry rules as (b); (e) ``pybreaker.CircuitBreaker().call``;
(f) tenacity around pybreaker. (c) is left out, and the report says so, while
``mendflow.resilience.breaker`` cannot be imported.

Run it with the project's environment (``.venv/bin/python``, with the ``bench`` extra installed).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import pybreaker
import tenacity

from mendflow import TransientError
from mendflow.resilience.budget import RetryBudget
from mendflow.resilience.retry import Retry, retrying

if TYPE_CHECKING:
    from mendflow.resilience.breaker import CircuitBreaker

MARK_START = "<!-- bench_guard:start -->"
MARK_END = "<!-- bench_guard:end -->"
TARGET_US = 2.0  # mendflow retry + breaker, per call
POLICY = Retry(attempts=5, base_s=0.2, cap_s=10.0, deadline_s=120.0)

Loop = Callable[[int], None]


def work() -> int:
    """The guarded call: as little as a call can do."""
    return 1


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of making the call: a label, what it is, and a loop of ``n`` such calls."""

    label: str
    what: str
    loop: Loop


# --------------------------------------------------------------------------------------------
# The variants


def bare() -> Loop:
    """(a) The call itself."""

    def loop(n: int) -> None:
        for _ in range(n):
            work()

    return loop


def mendflow_retry(budget: RetryBudget | None = None) -> Loop:
    """(b) mendflow's retry block, optionally drawing on a retry budget."""

    def loop(n: int) -> None:
        for _ in range(n):
            for attempt in retrying(POLICY, dependency="bench", budget=budget):
                with attempt:
                    work()

    return loop


def mendflow_retry_breaker(breaker: CircuitBreaker) -> Loop:
    """(c) mendflow's retry block around the circuit breaker's guard."""

    def loop(n: int) -> None:
        for _ in range(n):
            for attempt in retrying(POLICY, dependency="bench"):
                with attempt, breaker.guard():
                    work()

    return loop


def tenacity_retry(call: Callable[[], int] = work) -> Callable[[], int]:
    """tenacity's decorator with the rules of ``POLICY``: 5 attempts or 120 s, full jitter."""
    decorate = tenacity.retry(
        stop=tenacity.stop_after_attempt(5) | tenacity.stop_after_delay(120),
        wait=tenacity.wait_random_exponential(multiplier=0.2, max=10),
        retry=tenacity.retry_if_exception_type(TransientError),
        reraise=True,
    )
    guarded: Callable[[], int] = decorate(call)
    return guarded


def calls_of(guarded: Callable[[], object]) -> Loop:
    """A loop of ``n`` calls of an already guarded function."""

    def loop(n: int) -> None:
        for _ in range(n):
            guarded()

    return loop


def pybreaker_call(breaker: pybreaker.CircuitBreaker) -> Loop:
    """(e) ``breaker.call(work)``, pybreaker's documented way to guard one call."""

    def loop(n: int) -> None:
        for _ in range(n):
            breaker.call(work)

    return loop


def mendflow_breaker() -> tuple[CircuitBreaker | None, str]:
    """A mendflow CircuitBreaker that admits a call, or None and why there is none.

    Imported when the bench runs, not at the top: without a working breaker module the bench
    still measures the rest and says why (c) is missing.
    """
    try:
        module = importlib.import_module("mendflow.resilience.breaker")
        breaker: CircuitBreaker = module.CircuitBreaker("bench")
        with breaker.guard():
            work()
    except Exception as error:  # noqa: BLE001 - any failure means: bench without it, say why
        return None, f"{type(error).__name__}: {error}"
    return breaker, ""


def variants() -> tuple[list[Variant], list[str]]:
    """Every variant that can run here, and notes on the ones that cannot."""
    found = [
        Variant("(a)", "bare call of a trivial function (baseline)", bare()),
        Variant("(b)", "mendflow `retrying` block", mendflow_retry()),
        Variant(
            "(b+)", "mendflow `retrying` block with a `RetryBudget`", mendflow_retry(RetryBudget())
        ),
    ]
    notes = []
    breaker, why = mendflow_breaker()
    if breaker is None:
        notes.append(f"(c) mendflow `retrying` + `CircuitBreaker.guard()` not run: {why}")
    else:
        found.append(
            Variant(
                "(c)",
                "mendflow `retrying` + `CircuitBreaker.guard()`",
                mendflow_retry_breaker(breaker),
            )
        )
    found += [
        Variant(
            "(d)",
            "tenacity `@retry` (5 attempts, random exponential wait)",
            calls_of(tenacity_retry()),
        ),
        Variant(
            "(e)",
            "pybreaker `CircuitBreaker().call(f)`",
            pybreaker_call(pybreaker.CircuitBreaker()),
        ),
        Variant(
            "(f)",
            "tenacity `@retry` around pybreaker `CircuitBreaker`",
            calls_of(tenacity_retry(pybreaker.CircuitBreaker()(work))),
        ),
    ]
    return found, notes


# --------------------------------------------------------------------------------------------
# Measuring


def timed_ns(loop: Loop, n: int) -> int:
    """Nanoseconds that ``loop(n)`` takes, with the garbage collector off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        loop(n)
        return time.perf_counter_ns() - started
    finally:
        if was_enabled:
            gc.enable()


def measure(found: Sequence[Variant], iterations: int, repeat: int) -> dict[str, float]:
    """Best nanoseconds per call of each variant over ``repeat`` rounds, variants interleaved."""
    for variant in found:
        variant.loop(min(iterations, 10_000))  # warm up
    best: dict[str, float] = {}
    for _ in range(repeat):
        for variant in found:
            per_call = timed_ns(variant.loop, iterations) / iterations
            best[variant.label] = min(best.get(variant.label, per_call), per_call)
    return best


# --------------------------------------------------------------------------------------------
# Reporting


def table(found: Sequence[Variant], best_ns: dict[str, float]) -> str:
    """The results as a Markdown table, in µs per call."""
    base = best_ns["(a)"]
    rows = [
        "| | guarded call | µs per call | overhead over (a), µs | x (a) |",
        "|---|---|---:|---:|---:|",
    ]
    for variant in found:
        ns = best_ns[variant.label]
        rows.append(
            f"| {variant.label} | {variant.what} | {ns / 1000:.3f} | {(ns - base) / 1000:.3f} "
            f"| {ns / base:.1f}x |"
        )
    return "\n".join(rows)


def verdict(best_ns: dict[str, float]) -> str:
    """How mendflow's guarded call compares with the target and with tenacity + pybreaker."""
    lines = []
    if "(c)" in best_ns:
        ours = best_ns["(c)"] / 1000
        held = "met" if ours <= TARGET_US else "missed"
        theirs = best_ns["(f)"] / best_ns["(c)"]
        guard = (best_ns["(c)"] - best_ns["(b)"]) / 1000
        lines.append(
            f"- mendflow retry + breaker (c): {ours:.2f} µs per call, target <= {TARGET_US:g} "
            f"µs: **{held}**; `breaker.guard()` adds {guard:.2f} µs of it. tenacity + pybreaker "
            f"(f) takes {theirs:.1f}x as long."
        )
    lines.append(
        f"- mendflow retry alone (b): {best_ns['(b)'] / 1000:.2f} µs per call; tenacity alone "
        f"(d) takes {best_ns['(d)'] / best_ns['(b)']:.1f}x as long."
    )
    return "\n".join(lines)


def version(package: str) -> str:
    """The installed version of ``package``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> str:
    """The machine and software the figures come from, and how busy it was."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.machine()
    load = os.getloadavg()
    packages = ", ".join(f"{p} {version(p)}" for p in ("mendflow", "tenacity", "pybreaker"))
    return (
        f"- CPU: {cpu}, {len(os.sched_getaffinity(0))} logical CPUs (nproc)\n"
        f"- OS: {platform.platform()}\n"
        f"- Python {platform.python_version()}; {packages}\n"
        f"- Load average when the run started (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / "
        f"{load[2]:.2f}"
    )


def report(
    found: Sequence[Variant], best_ns: dict[str, float], notes: Sequence[str], argv: Sequence[str]
) -> str:
    """The generated section of BENCHMARKS.md, markers included."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    missing = "".join(f"- {note}\n" for note in notes)
    return (
        f"{MARK_START}\n"
        "## Guarded call overhead\n\n"
        f"_Generated by `bench/bench_guard.py` on {when}._\n\n"
        "What guarding one call costs when the call succeeds: the same trivial function, called\n"
        "bare and through each guard in one process, best of several interleaved rounds, with the\n"
        "garbage collector off. Every figure includes the loop's own cost; the overhead column\n"
        "subtracts the bare call's. tenacity is configured with mendflow's rules\n"
        "(`stop_after_attempt(5) | stop_after_delay(120)`,\n"
        "`wait_random_exponential(multiplier=0.2, max=10)`,\n"
        "`retry_if_exception_type(TransientError)`, `reraise=True`); without the last three it\n"
        "costs the same. pybreaker and mendflow's breaker use their defaults.\n\n"
        f"Reproduce:\n\n```\n{command_line(argv)}\n```\n\n"
        f"Machine:\n\n{machine()}\n\n"
        f"{table(found, best_ns)}\n\n"
        f"{verdict(best_ns)}\n{missing}"
        f"{MARK_END}"
    )


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces this run."""
    return " ".join(["python bench/bench_guard.py", shlex.join(argv)]).strip()


def write_report(path: Path, section: str) -> None:
    """Replace the section between the markers in ``path``, or add it at the end."""
    text = path.read_text() if path.exists() else ""
    if MARK_START in text and MARK_END in text:
        before, rest = text.split(MARK_START, 1)
        text = before + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every variant, print the table, and write the report if asked."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200_000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best one counts")
    parser.add_argument("--write", type=Path, metavar="BENCHMARKS.md")
    args = parser.parse_args(args_list)
    found, notes = variants()
    best_ns = measure(found, args.iterations, args.repeat)
    print(table(found, best_ns))
    print()
    print(verdict(best_ns))
    for note in notes:
        print(f"- {note}")
    if args.write is not None:
        write_report(args.write, report(found, best_ns, notes, args_list))
        print(f"\nwrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
