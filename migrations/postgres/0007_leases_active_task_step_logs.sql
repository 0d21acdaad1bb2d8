-- Who works the queue: one row per lease, its holder and an epoch raised at every change of
-- hands; the holder's writes check the epoch (fencing). SQLite's holder is decided by the
-- file lock `worker.lock`; `expires_at` (milliseconds, the database's clock) is for
-- PostgreSQL's replicas and stays 0 in SQLite.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL DEFAULT '',
    epoch       BIGINT NOT NULL DEFAULT 0,
    expires_at  BIGINT NOT NULL DEFAULT 0
);
-- At most one waiting or running delivery per task, whoever enqueues it.
CREATE UNIQUE INDEX deliveries_active_task ON deliveries (task) WHERE state IN ('queued', 'running');
-- A copy of the end of a step's log, for replicas that do not have its file.
ALTER TABLE steps ADD COLUMN log TEXT;
