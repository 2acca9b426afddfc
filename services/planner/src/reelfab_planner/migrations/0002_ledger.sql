-- the job ledger: every job the planner planned (or saw pass: jobs submitted by hand), its lineage and
-- where it is on its path; job_steps keeps each stage event as it arrived
CREATE TABLE jobs (
    job_id             text PRIMARY KEY,
    status             text NOT NULL,
    origin             text NOT NULL,  -- planner | trend | schedule | external
    plan_id            text,
    trend_id           text,
    arm_id             text,
    subject_id         text,
    consent_version    int,
    template_id        text,
    music_id           text,
    caption_style      text,
    swapper_model      text,
    model_licence      text,
    priority           int NOT NULL DEFAULT 0,
    deadline           timestamptz,
    lineage            jsonb NOT NULL DEFAULT '{}',  -- hashes and URIs, merged from each stage
    failed_stage       text,
    failed_reason_code text,
    failed_reason      text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status, created_at);
CREATE INDEX jobs_by_subject ON jobs (subject_id, created_at);

CREATE TABLE job_steps (
    job_id  text NOT NULL,
    seq     bigserial,
    status  text NOT NULL,
    at      timestamptz NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (job_id, seq)
);

-- each plan: what triggered it, how many were asked and planned, and why fewer
CREATE TABLE plans (
    plan_id    text PRIMARY KEY,
    trigger    text NOT NULL,  -- cli | schedule | trend
    trend_id   text,
    asked      int NOT NULL,
    planned    int NOT NULL,
    candidates bigint NOT NULL,
    notes      jsonb NOT NULL DEFAULT '[]',
    at         timestamptz NOT NULL
);

-- subjects, templates, music and caption styles analytics (or an operator) flagged
CREATE TABLE flags (
    kind     text NOT NULL,  -- FACE | TEMPLATE | MUSIC | CAPTION_STYLE
    item_id  text NOT NULL,
    action   text NOT NULL,  -- DISABLED | ELIMINATION_CANDIDATE | CLEARED
    reason   text NOT NULL,
    at       timestamptz NOT NULL,
    PRIMARY KEY (kind, item_id)
);

-- the latest policy per arm space, as received on reelfab.policy.updated.v1
CREATE TABLE policy (
    arm_space  text PRIMARY KEY,
    version    bigint NOT NULL,
    arms       jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);
