-- The commit statuses CIs post to `POST /api/statuses/<sha>`: the latest of each context of a
-- sha, what a step on a status runner waits for.
CREATE TABLE commit_statuses (
    sha TEXT NOT NULL,
    context TEXT NOT NULL,
    state TEXT NOT NULL,
    target_url TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (sha, context)
);
