"""The tables of the state store, all on one ``metadata``.

- ``mf_runs``, ``mf_batches``, ``mf_attempts``, ``mf_events``: what each run did (the engine);
- ``mf_breakers``: each dependency's circuit-breaker state, written only when it changes, so every
  worker of a pipeline sees the same breaker and it survives a restart;
- ``mf_incidents``, ``mf_incident_actions``: the healing ledger, one incident per failure episode
  with each action tried and its outcome;
- ``mf_jobs``: the run queue of ``mendflow serve`` and its workers; a job being run holds its
  pipeline's lease (at most one ``running`` job per pipeline, enforced by a partial unique index)
  and heartbeats;
- ``mf_schedules``: per pipeline, when the scheduler runs it next, and whether it is paused;
- ``mf_alerts``: Alertmanager notifications received, one row per alert (fingerprint and start),
  so a repeated notification is not acted on twice;
- ``mf_maintenance``: maintenance windows set through the API (those in YAML are not stored).

Step 1 created the tables of the run history, breakers and ledger; step 3 creates the
service's (jobs, schedules, alerts, maintenance). These are the tables as those steps create
them (``migrations.py``); other steps change the schema with DDL of their own (step 2
replaced the one-column ``pipeline`` indexes of ``mf_runs`` and ``mf_events`` by composite
ones). A column added by a later step is declared
here too, and step 1 must then keep creating the table without it.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
runs = sa.Table(
    "mf_runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("pipeline", sa.String(128), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("write_mode", sa.String(16), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("rows_read", sa.BigInteger, default=0),
    sa.Column("rows_loaded", sa.BigInteger, default=0),
    sa.Column("dead_letters", sa.BigInteger, default=0),
    sa.Column("batches", sa.Integer, default=0),
    sa.Column("skipped", sa.Integer, default=0),
    sa.Column("retries", sa.Integer, default=0),
    sa.Column("error_type", sa.String(128)),
    sa.Column("error", sa.Text),
    sa.Column("retryable", sa.Boolean),
    sa.Column("position", sa.Text),
)
batches = sa.Table(
    "mf_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("pipeline", sa.String(128), nullable=False),
    sa.Column("batch_id", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("dead_letters", sa.BigInteger, nullable=False, default=0),
    sa.Column("at", sa.Float, nullable=False),
)
attempts = sa.Table(
    "mf_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("pipeline", sa.String(128), nullable=False),
    sa.Column("dependency", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("delay_s", sa.Float, nullable=False),
    sa.Column("error_type", sa.String(128), nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)
events = sa.Table(
    "mf_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("pipeline", sa.String(128), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)
breakers = sa.Table(
    "mf_breakers",
    metadata,
    sa.Column("dependency", sa.String(512), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("opened_at", sa.Float),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("version", sa.Integer, nullable=False, default=0),
    sa.Column("updated_at", sa.Float, nullable=False),
)
incidents = sa.Table(
    "mf_incidents",
    metadata,
    sa.Column("incident_id", sa.String(32), primary_key=True),
    sa.Column("pipeline", sa.String(128), nullable=False, index=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("dependency", sa.Text, nullable=False),
    sa.Column("failure_class", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detected_at", sa.Float, nullable=False),
    sa.Column("recovered_at", sa.Float),
    sa.Column("escalated", sa.Boolean, nullable=False, default=False),
    sa.Column("evidence", sa.Text, nullable=False),
)
incident_actions = sa.Table(
    "mf_incident_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(32), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("at", sa.Float, nullable=False),
)
jobs = sa.Table(
    "mf_jobs",
    metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("pipeline", sa.String(128), nullable=False),
    #: "run" (a run of the pipeline) or "replay" (dead letters replayed, holding the lease).
    sa.Column("kind", sa.String(16), nullable=False),
    #: Why: "schedule", "manual", "alert", "relaunch".
    sa.Column("reason", sa.String(32), nullable=False),
    #: queued, running, succeeded, failed, lost (its worker stopped heartbeating), cancelled.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("worker", sa.String(128)),
    sa.Column("run_id", sa.String(32)),
    sa.Column("claimed_at", sa.Float),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("error", sa.Text),
    #: The ledger incident this job belongs to (a relaunch, or a run an alert asked for).
    sa.Column("incident_id", sa.String(32)),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
)
schedules = sa.Table(
    "mf_schedules",
    metadata,
    sa.Column("pipeline", sa.String(128), primary_key=True),
    sa.Column("next_at", sa.Float),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("paused_reason", sa.Text, nullable=False, default=""),
    sa.Column("updated_at", sa.Float, nullable=False),
)
alerts = sa.Table(
    "mf_alerts",
    metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("starts_at", sa.String(64), primary_key=True),
    sa.Column("alertname", sa.String(128), nullable=False),
    sa.Column("pipeline", sa.String(128), nullable=False, default=""),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("action", sa.String(32), nullable=False, default=""),
    sa.Column("outcome", sa.String(32), nullable=False, default=""),
    sa.Column("incident_id", sa.String(32)),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("resolved_at", sa.Float),
    sa.Column("labels", sa.Text, nullable=False, default="{}"),
)
maintenance = sa.Table(
    "mf_maintenance",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(128), nullable=False, index=True),
    sa.Column("starts_at", sa.Float, nullable=False),
    sa.Column("ends_at", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)
