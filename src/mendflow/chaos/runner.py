"""``run_chaos``: a pipeline under seeded faults, compared with its fault-free run.

The pipeline runs once without faults, into a destination of its own: the reference. Then, for
each seed, a ``FaultPlan`` is drawn and the pipeline runs under it into a fresh destination and
state store, each attempt in a process of its own. A SIGKILLed attempt is started again, as a
supervisor would; an attempt that escalated is started again as a human would once the cause is
cleared (the injected fault fired once, so it is gone), at most ``max_restarts`` times. Then the
checker compares, by content, the seed's destination with the reference (see ``_checks``), and
the ledger tells the incidents, actions, times to recover and pages.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from mendflow import config
from mendflow.chaos._checks import problems_of
from mendflow.chaos._child import ESCALATED, Job, attempt
from mendflow.chaos._report import ChaosReport, SeedReport, ledger_figures
from mendflow.chaos._target import Digest, Target, remove_folder
from mendflow.chaos.journal import Journal
from mendflow.chaos.plan import FAULT_KINDS, FaultPlan, parse_kinds
from mendflow.chaos.source import clear
from mendflow.exceptions import ConfigError, MendflowError

__all__ = ["ChaosOptions", "run_chaos"]

_TEXT_TYPES = ("VARCHAR", "JSON")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ChaosOptions:
    """How many seeds, which faults, where the work goes."""

    seeds: int = 20
    first_seed: int = 1
    kinds: tuple[str, ...] = FAULT_KINDS
    workdir: Path = Path(".mendflow/chaos")
    max_faults: int = 3
    max_restarts: int = 10
    key: tuple[str, ...] = ()
    keep: bool = False
    attempt_timeout_s: float = 600.0
    #: Seeds run at once (each in its own processes, destination and state store).
    jobs: int = 1
    wrap_sink: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Setup:
    """What every seed shares: the pipeline, its destination, the reference."""

    file: Path
    name: str
    target: Target
    key: tuple[str, ...]
    column: str | None
    reference: Digest
    ref_spec: dict[str, Any]
    batches: int


def run_chaos(
    pipeline_file: str | Path,
    options: ChaosOptions,
    *,
    progress: Callable[[SeedReport], None] = lambda _: None,
) -> ChaosReport:
    """Run the reference, then every seed; the report (``report.failed`` says whether any seed
    differed from the reference or a requested fault kind was never injected)."""
    started = time.monotonic()
    kinds = parse_kinds(options.kinds)
    setup = _setup(Path(pipeline_file), options, kinds)
    seeds: list[SeedReport] = []
    numbers = range(options.first_seed, options.first_seed + options.seeds)
    try:
        with ThreadPoolExecutor(options.jobs, thread_name_prefix="mendflow-chaos") as pool:
            for report in pool.map(lambda n: _run_seed(setup, n, options, kinds), numbers):
                seeds.append(report)
                progress(report)
    finally:
        if not options.keep:
            setup.target.drop(setup.ref_spec)
    return ChaosReport.of(setup.name, setup.target.kind, kinds, setup.reference, setup.batches,
                          seeds, wall_s=time.monotonic() - started)


def _setup(file: Path, options: ChaosOptions, kinds: Sequence[str]) -> _Setup:
    """Check the pipeline can be compared, and run the reference."""
    spec = config.load(file)
    raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    pipeline = spec.pipeline
    target = Target(dict(raw["destination"]), file.parent, pipeline.name)
    key = options.key or tuple(pipeline.primary_key)
    if not key:
        raise ConfigError(f"{file}: mendflow chaos compares rows by key; set primary_key in the "
                          "pipeline or pass --key COLUMN.")
    column = next((c for c, t in pipeline.types.items() if t not in _TEXT_TYPES and c not in key),
                  None)
    if "malformed" in kinds and column is None:
        raise ConfigError(f"{file}: the malformed fault needs a declared non-text column "
                          "(columns: or contract:) to break; declare one or leave it out.")
    folder = options.workdir / "reference"
    remove_folder(folder)
    folder.mkdir(parents=True)
    ref_spec = target.fresh(folder, "ref")
    job = Job(pipeline_file=str(file.resolve()), destination=ref_spec,
              state=f"sqlite:///{folder / 'state.db'}", journal=str(folder / "journal.jsonl"),
              plan=FaultPlan(0), key=key, column=column)
    code = _spawn(job, options.attempt_timeout_s)
    if code != 0:
        failed = Journal(Path(job.journal)).noted("failed")
        raise MendflowError(f"the fault-free reference run of {file} failed (exit {code}): "
                            f"{failed[-1]['message'] if failed else 'see the output above'}. "
                            "Fix the pipeline before running chaos against it.")
    reference = target.digest(ref_spec, key=key)
    batches = Journal(Path(job.journal)).value("pull") - 1
    return _Setup(file.resolve(), pipeline.name, target, key, column, reference, ref_spec,
                  max(1, batches))


def _run_seed(setup: _Setup, seed: int, options: ChaosOptions, kinds: Sequence[str]) -> SeedReport:
    """One seed: fresh destination and state, attempts until success, then the checks."""
    started = time.monotonic()
    plan = FaultPlan.from_seed(seed, kinds=kinds, batches=setup.batches,
                               max_faults=options.max_faults)
    folder = options.workdir / f"seed-{seed}"
    remove_folder(folder)
    folder.mkdir(parents=True)
    dest = setup.target.fresh(folder, f"s{seed}")
    state = f"sqlite:///{folder / 'state.db'}"
    job = Job(pipeline_file=str(setup.file), destination=dest, state=state,
              journal=str(folder / "journal.jsonl"), plan=plan, key=setup.key,
              column=setup.column, wrap_sink=options.wrap_sink)
    exits: list[int] = []
    while len(exits) <= options.max_restarts:
        exits.append(_spawn(job, options.attempt_timeout_s))
        if exits[-1] == ESCALATED:
            clear(Journal(Path(job.journal)), plan)
        elif exits[-1] != -signal.SIGKILL:
            break
    journal = Journal(Path(job.journal))
    problems, corrupted = problems_of(setup, dest, journal, exits, plan)
    figures = ledger_figures(state, setup.name)
    if figures["open_incidents"]:
        problems.append(f"{figures['open_incidents']} incidents were left open")
    if not options.keep:
        setup.target.drop(dest)
        remove_folder(folder)
    return SeedReport(
        seed=seed, plan=tuple(f.as_dict() for f in plan.faults),
        injected=dict(sorted(journal.injected().items())), exits=tuple(exits),
        kills=exits.count(-signal.SIGKILL), escalated_runs=exits.count(ESCALATED),
        pages=sum(1 for p in journal.noted("page") if p["kind"] == "escalated"),
        corrupted=corrupted, waited_s=round(journal.offset_s, 3),
        wall_s=round(time.monotonic() - started, 3), problems=tuple(problems), **figures,
    )


def _spawn(job: Job, timeout_s: float) -> int:
    """Run one attempt in a process forked from a clean server process; its exit code
    (negative: the signal that ended it)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mendflow.chaos._child"])
    process = context.Process(target=attempt, args=(job,), name="mendflow-chaos")
    process.start()
    process.join(timeout_s)
    if process.exitcode is None:
        process.kill()
        process.join()
        return -1_000
    return int(process.exitcode)

