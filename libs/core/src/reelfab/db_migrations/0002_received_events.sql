-- What a service received and acknowledged, one row per event (the skeleton's handlers record
-- here; later handlers may keep using it as an inbox log for operators).
CREATE TABLE received_events (
    event_id        text PRIMARY KEY,
    topic           text NOT NULL,
    key             text,
    record          text NOT NULL,
    kafka_partition int NOT NULL,
    kafka_offset    bigint NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);
