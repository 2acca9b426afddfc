-- every audit checkpoint the registry signed, kept beside the log: the compacted checkpoint topic may
-- keep only its newest message, and that may be an older checkpoint someone replayed; verification
-- takes the strongest signed checkpoint it can find (topic, this record, the running registry's memory)
CREATE TABLE audit_checkpoints (
    log_id          text NOT NULL,
    entry_count     bigint NOT NULL,
    head_seq        bigint NOT NULL,
    head_hash       text NOT NULL,
    issued_at       timestamptz NOT NULL,
    key_id          text NOT NULL,
    reason          text NOT NULL,
    payload         bytea NOT NULL,       -- the signed canonical bytes
    signature       bytea NOT NULL,
    PRIMARY KEY (log_id, entry_count, issued_at)
);
