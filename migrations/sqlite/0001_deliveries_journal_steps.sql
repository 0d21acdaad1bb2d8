-- The queue, each delivery's repositories, the journal and the step records.
-- SQLite dialect: `INTEGER PRIMARY KEY` is the rowid; booleans are BIGINT 0/1.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    task        TEXT NOT NULL,
    state       TEXT NOT NULL,
    phase       TEXT NOT NULL DEFAULT '',
    priority    BIGINT NOT NULL DEFAULT 0,
    source      TEXT NOT NULL DEFAULT 'cli',
    requester   TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    error       TEXT NOT NULL DEFAULT '',
    cancel      BIGINT NOT NULL DEFAULT 0,
    origin      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX deliveries_state ON deliveries (state, priority, id);
CREATE TABLE delivery_repos (
    delivery_id  BIGINT NOT NULL REFERENCES deliveries (id),
    position     BIGINT NOT NULL,
    repo         TEXT NOT NULL,
    branch       TEXT NOT NULL,
    branch_sha   TEXT NOT NULL,
    base_sha     TEXT NOT NULL,
    rebased_sha  TEXT NOT NULL DEFAULT '',
    deployed     BIGINT NOT NULL DEFAULT 0,
    merged       BIGINT NOT NULL DEFAULT 0,
    rolled_back  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (delivery_id, repo)
);
CREATE TABLE journal (
    id          INTEGER PRIMARY KEY,
    delivery_id BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    phase       TEXT NOT NULL,
    repo        TEXT NOT NULL DEFAULT '',
    event       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX journal_delivery ON journal (delivery_id, id);
CREATE TABLE steps (
    id          INTEGER PRIMARY KEY,
    delivery_id BIGINT NOT NULL,
    repo        TEXT NOT NULL,
    step        TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    exit_code   BIGINT,
    outcome     TEXT NOT NULL DEFAULT 'running',
    log_path    TEXT NOT NULL
);
CREATE INDEX steps_delivery ON steps (delivery_id, id);
CREATE TABLE hook_decisions (
    rule     TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    count    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (rule, outcome)
);
