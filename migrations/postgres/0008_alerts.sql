-- Alertmanager's notifications, one row per alert (its fingerprint and when it started
-- firing): a repeated notification acts once; what became of each alert is kept.
CREATE TABLE alerts (
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    name        TEXT NOT NULL,
    delivery_id BIGINT,
    outcome     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE INDEX alerts_received_at ON alerts (received_at);
