-- Autotests: a task branch's head, rebased on its upstream and built and tested on its own,
-- never deployed nor merged. One row per request: `queued`, `running`, then `passed`,
-- `failed`, `superseded` (a newer push to the same branch) or `interrupted` (the worker
-- stopped). `rebased_on` is the upstream commit it was rebased onto, `tested_sha` the
-- commit its steps ran on; `step` and `reason` say why it failed; `log` is the end of its
-- steps' logs; `pid` the supervisor of the step running, for a restart to stop it.
CREATE TABLE autotests (
    id          INTEGER PRIMARY KEY,
    task        TEXT NOT NULL,
    repo        TEXT NOT NULL,
    branch      TEXT NOT NULL,
    sha         TEXT NOT NULL,
    source      TEXT NOT NULL,
    requester   TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    rebased_on  TEXT NOT NULL DEFAULT '',
    tested_sha  TEXT NOT NULL DEFAULT '',
    step        TEXT NOT NULL DEFAULT '',
    reason      TEXT NOT NULL DEFAULT '',
    log         TEXT NOT NULL DEFAULT '',
    pid         BIGINT,
    requested_at BIGINT NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT
);
CREATE INDEX autotests_task ON autotests (task);
CREATE INDEX autotests_state ON autotests (state);
