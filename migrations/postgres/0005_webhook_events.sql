-- Replay protection on what a webhook's signature covers: the id of the comment, review or
-- pull request an event acted on (the delivery id is outside the signature). Kept for good:
-- a signed body never expires, so neither may the memory of having acted on it.
CREATE TABLE webhook_events (
    key         TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);
