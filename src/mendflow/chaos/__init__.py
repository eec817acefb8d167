"""Seeded fault injection that proves mendflow's guarantees (``mendflow chaos``).

A ``FaultPlan`` is drawn from a seed; injectors wrap the parts of a pipeline and inject its
faults, counting each one in a ``Journal``: ``FaultySource`` (any source, at batch boundaries),
``FaultyTransport`` (an HTTP source's httpx transport, at request level), ``FaultySink`` (any
destination) and ``ProcessKiller`` (SIGKILL at a seeded event); ``VirtualClock`` makes every
wait free. ``run_chaos`` runs a pipeline once fault-free and then under N seeds, and compares.
"""

from mendflow.chaos._kill import KillAt, ProcessKiller
from mendflow.chaos._report import ChaosReport, SeedReport
from mendflow.chaos.clock import VirtualClock
from mendflow.chaos.journal import Journal
from mendflow.chaos.plan import FAULT_KINDS, PERMANENT, RECOVERABLE, Fault, FaultPlan
from mendflow.chaos.runner import ChaosOptions, run_chaos
from mendflow.chaos.sink import FaultySink
from mendflow.chaos.source import FaultySource
from mendflow.chaos.transport import FaultyTransport

__all__ = [
    "FAULT_KINDS",
    "PERMANENT",
    "RECOVERABLE",
    "ChaosOptions",
    "ChaosReport",
    "Fault",
    "FaultPlan",
    "FaultySink",
    "FaultySource",
    "FaultyTransport",
    "Journal",
    "KillAt",
    "ProcessKiller",
    "SeedReport",
    "VirtualClock",
    "run_chaos",
]
