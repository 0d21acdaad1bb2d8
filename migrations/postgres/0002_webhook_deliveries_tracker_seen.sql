-- Replay protection for GitHub webhooks, and the tracker poller's memory.
CREATE TABLE webhook_deliveries (
    id          TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (received_at);
CREATE TABLE tracker_seen (
    task     TEXT PRIMARY KEY,
    status   TEXT NOT NULL,
    seen_at  BIGINT NOT NULL
);
