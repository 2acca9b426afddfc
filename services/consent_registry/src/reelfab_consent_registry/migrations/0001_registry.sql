-- consent-registry: subjects, versioned consent records, encrypted enrolment, audit chain.
-- Nothing is overwritten: amendments and revocations are new versions; erasure destroys a key.

CREATE TABLE subjects (
    subject_id      text PRIMARY KEY,
    display_name    text NOT NULL,
    wrapped_key     bytea,                -- the subject's data key, wrapped by the master key; NULL once erased
    key_wrapper     text NOT NULL,        -- which master key / KMS wrapped it
    created_at      timestamptz NOT NULL DEFAULT now(),
    erased_at       timestamptz
);

CREATE TABLE consent_records (
    subject_id      text NOT NULL REFERENCES subjects,
    version         int NOT NULL,
    status          text NOT NULL CHECK (status IN ('GRANTED', 'AMENDED', 'REVOKED', 'EXPIRED', 'ERASED')),
    document_sha256 text NOT NULL,
    document_uri    text,
    scope           jsonb NOT NULL,
    valid_from      timestamptz NOT NULL,
    valid_until     timestamptz,
    daily_cap       int,
    reason          text,
    actor           text NOT NULL,
    lease_payload   bytea NOT NULL,
    lease_signature bytea NOT NULL,
    lease_key_id    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_id, version)
);

CREATE TABLE enrolled_images (
    image_id        bigserial PRIMARY KEY,
    subject_id      text NOT NULL REFERENCES subjects,
    sha256          text NOT NULL,
    phash           text NOT NULL,
    embedder        text NOT NULL,
    embedding_enc   bytea NOT NULL,       -- float32 vector, encrypted with the subject's key
    image_uri       text NOT NULL,        -- the image bytes, encrypted with the subject's key
    qc              jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subject_id, sha256)
);

-- uses per subject per day, for the daily cap
CREATE TABLE usage (
    subject_id      text NOT NULL REFERENCES subjects,
    day             date NOT NULL,
    uses            int NOT NULL DEFAULT 0,
    PRIMARY KEY (subject_id, day)
);

-- posts that used a face, from publish.completed: the takedown list of a revocation
CREATE TABLE posts (
    post_id         text NOT NULL,
    platform        text NOT NULL,
    subject_id      text NOT NULL,
    job_id          text NOT NULL,
    consent_version int,
    published_at    timestamptz NOT NULL,
    PRIMARY KEY (platform, post_id)
);
CREATE INDEX posts_by_subject ON posts (subject_id);

-- Ed25519 signing keys; the private half is encrypted under the master key and never leaves here
CREATE TABLE signing_keys (
    key_id          text PRIMARY KEY,
    public_key      bytea NOT NULL,
    private_key_enc bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz
);

CREATE TABLE api_tokens (
    token_id        text PRIMARY KEY,
    name            text NOT NULL,
    role            text NOT NULL CHECK (role IN ('admin', 'reader')),
    token_sha256    text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

-- hash-chained audit log: each entry's hash covers its content and the previous entry's hash;
-- it holds hashes and ids only, so it outlives erasure
CREATE TABLE audit_log (
    seq             bigserial PRIMARY KEY,
    at              timestamptz NOT NULL,
    actor           text NOT NULL,
    action          text NOT NULL,
    subject_id      text,
    details         jsonb NOT NULL,
    prev_hash       text NOT NULL,
    entry_hash      text NOT NULL
);
