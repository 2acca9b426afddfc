-- publisher (services/publisher): posting accounts (tokens encrypted at rest), the review queue with
-- each job's posting progress (what makes a post happen at most once), the operators who review, the
-- audit of their decisions, the takedown queue and the posts whose engagement is read back.

CREATE TABLE accounts (
    name                text PRIMARY KEY,
    platform            text NOT NULL CHECK (platform IN ('tiktok', 'dryrun')),
    mode                text NOT NULL CHECK (mode IN ('direct', 'inbox')),
    open_id             text,
    access_token        bytea,           -- Fernet-encrypted (publisher_token_key)
    access_expires_at   timestamptz,
    refresh_token       bytea,           -- Fernet-encrypted; TikTok rotates it: the newest is stored at once
    refresh_expires_at  timestamptz,
    token_problem       text,            -- set: no valid token (refresh refused, ...); posts wait
    auto_approve        boolean NOT NULL DEFAULT false,  -- only for dry-run and sandbox accounts
    auto_privacy        text,            -- the privacy level auto-approved posts get
    sandbox             boolean NOT NULL DEFAULT false,
    self_only           boolean NOT NULL DEFAULT false,  -- an unaudited client: SELF_ONLY posts only
    paused_until        timestamptz,     -- spam risk: the account rests until then
    paused_reason       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reviews (
    job_id              text PRIMARY KEY,
    status              text NOT NULL,   -- desk.py: waiting | approved | posting | in_inbox | published | rejected | failed | stopped
    subject_id          text NOT NULL,
    consent_version     integer NOT NULL,
    template_id         text NOT NULL,
    template_tags       text[] NOT NULL DEFAULT '{}',
    arm_id              text,
    platform            text NOT NULL,
    commercial          boolean,
    final_uri           text NOT NULL,
    final_sha256        text NOT NULL,
    duration_s          double precision NOT NULL,
    c2pa_label          text,
    title               text NOT NULL,
    hashtags            text[] NOT NULL DEFAULT '{}',
    trace_id            text,
    render_event_id     text NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    -- the decision
    account             text,
    privacy_level       text,
    post_options        jsonb,           -- toggles and cover time chosen on approval
    decided_by          text,
    decided_at          timestamptz,
    reason              text,            -- a rejection's, failure's or stop's
    reason_code         text,
    -- posting progress (persisted as it happens: a restart resumes instead of posting twice)
    publish_id          text,
    upload_url          text,
    upload_started_at   timestamptz,
    video_size          bigint,
    chunk_size          bigint,
    total_chunks        integer,
    chunks_done         integer NOT NULL DEFAULT 0,
    upload_done         boolean NOT NULL DEFAULT false,
    abandoned_publish_ids text[] NOT NULL DEFAULT '{}',  -- inits whose upload never completed (no post)
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz,
    waiting_for         text,            -- why a due post is not moving (no valid token, account paused, ...)
    claimed_by          text,
    claimed_until       timestamptz,
    post_id             text,
    share_url           text,
    published_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reviews_open ON reviews (status, next_attempt_at) WHERE status IN ('waiting', 'approved', 'posting', 'in_inbox');
CREATE INDEX reviews_by_subject ON reviews (subject_id);

CREATE TABLE review_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    job_id      text,
    actor       text NOT NULL,
    action      text NOT NULL,      -- approved | rejected | auto_approved | stopped | failed | published | takedown_done | ...
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX review_audit_by_job ON review_audit (job_id);

CREATE TABLE operators (
    name         text PRIMARY KEY,
    token_sha256 text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE takedowns (
    post_id       text PRIMARY KEY,
    job_id        text,
    subject_id    text NOT NULL,
    account       text,
    platform      text NOT NULL,
    reason        text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    done_at       timestamptz,
    done_by       text,
    note          text
);

-- published posts whose engagement is read back
CREATE TABLE posts (
    post_id        text PRIMARY KEY,
    job_id         text NOT NULL UNIQUE,
    platform       text NOT NULL,
    account        text NOT NULL,
    dry_run        boolean NOT NULL,
    subject_id     text NOT NULL,
    template_id    text NOT NULL,
    arm_id         text,
    duration_s     double precision NOT NULL,
    published_at   timestamptz NOT NULL,
    last_polled_at timestamptz,
    polls          integer NOT NULL DEFAULT 0,
    readable       boolean NOT NULL DEFAULT true   -- false: the platform gave no video id to read
);
CREATE INDEX posts_readback ON posts (last_polled_at) WHERE readable;
