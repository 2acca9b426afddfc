-- Delivery rules (DESIGN.md): idempotent handling and the transactional outbox.

-- One row per event a handler has finished; a redelivered event finds its row and changes nothing.
CREATE TABLE processed_events (
    event_id     text PRIMARY KEY,
    topic        text NOT NULL,
    handler      text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Events written in the same transaction as the table change they announce; the relay publishes
-- them in id order and marks them, recording where they landed.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    topic           text NOT NULL,
    key             text,
    value           bytea NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at    timestamptz,
    kafka_partition int,
    kafka_offset    bigint
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
