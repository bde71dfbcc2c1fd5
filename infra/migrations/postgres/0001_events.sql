-- The event log. Positions are assigned under a transaction-scoped advisory lock, so a
-- position becomes visible only after every smaller one has committed.
CREATE TABLE events (
    global_position BIGINT      PRIMARY KEY,
    event_id        UUID        NOT NULL UNIQUE,
    stream_id       TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL CHECK (stream_version >= 1),
    event_type      TEXT        NOT NULL CHECK (length(event_type) BETWEEN 1 AND 128),
    schema_version  INTEGER     NOT NULL CHECK (schema_version >= 1),
    occurred_at     TIMESTAMPTZ NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    correlation_id  UUID        NOT NULL,
    causation_id    UUID,
    actor           TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    prev_hash       TEXT        NOT NULL,
    hash            TEXT        NOT NULL,
    UNIQUE (stream_id, stream_version)
);
