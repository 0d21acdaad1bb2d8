-- A showroom per task: the task's branches, rebased on upstream, deployed beside the
-- delivery line with the showroom environment's variables. `label` is the task key made a
-- safe DNS label, `shas` the deployed commit of each repository (a JSON object), `state`
-- one of deploying, up, failed, tearing-down, down.
CREATE TABLE showrooms (
    task        TEXT PRIMARY KEY,
    label       TEXT NOT NULL,
    url         TEXT NOT NULL,
    shas        TEXT NOT NULL DEFAULT '{}',
    requester   TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    deployed_at BIGINT
);
CREATE INDEX showrooms_state ON showrooms (state);
