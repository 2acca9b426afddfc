-- analytics (services/analytics): posts with their job's lineage, every engagement reading, what each
-- post contributes to the per-arm Beta posteriors (a post = `trials` Bernoulli trials at rate
-- `reward`: posteriors.py), the arms themselves, the spaces waiting to be published, moderation
-- strikes, flags and the audit of every rule decision.

-- one row per post: the lineage (from publish.completed, or from a reading until it comes) and the
-- newest reading's instant and reward
CREATE TABLE posts (
    post_id        text PRIMARY KEY,
    platform       text,
    job_id         text,
    subject_id     text,
    template_id    text,
    arm_id         text,
    lineage        text,            -- publish | engagement | null (no lineage yet: unattributed)
    published_at   timestamptz,
    observed_at    timestamptz,     -- the newest reading's
    reward         double precision,
    trials         double precision NOT NULL DEFAULT 0,  -- what that reward weighs
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX posts_by_job ON posts (job_id);
CREATE INDEX posts_unattributed ON posts (post_id) WHERE lineage IS NULL;

-- every reading, newest or not (counters are cumulative)
CREATE TABLE observations (
    event_id          text PRIMARY KEY,
    post_id           text NOT NULL,
    observed_at       timestamptz NOT NULL,
    views             bigint NOT NULL,
    likes             bigint NOT NULL,
    comments          bigint NOT NULL,
    shares            bigint NOT NULL,
    avg_watch_time_s  double precision,
    completion_rate   double precision,
    reward            double precision,
    trials            double precision NOT NULL DEFAULT 0,
    received_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX observations_by_post ON observations (post_id, observed_at);

-- what each post adds now: its trials at its reward, to one arm per space (replaced when a newer
-- reading comes)
CREATE TABLE contributions (
    post_id  text NOT NULL,
    space    text NOT NULL,
    arm_id   text NOT NULL,
    reward   double precision NOT NULL,
    trials   double precision NOT NULL,
    PRIMARY KEY (post_id, space)
);

-- per arm: posts contributing, sum of trials * reward and of trials * (1 - reward) (the prior is
-- added when read)
CREATE TABLE arms (
    space       text NOT NULL,
    arm_id      text NOT NULL,
    pulls       bigint NOT NULL DEFAULT 0,
    successes   double precision NOT NULL DEFAULT 0,
    failures    double precision NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (space, arm_id)
);

-- a change to a space, waiting for the policy flusher (insert-only: handlers never contend on a row)
CREATE TABLE space_changes (
    id       bigserial PRIMARY KEY,
    space    text NOT NULL,
    made_at  timestamptz NOT NULL DEFAULT now()
);

-- per space: the version of its last publication
CREATE TABLE spaces (
    space           text PRIMARY KEY,
    policy_version  bigint NOT NULL,
    published_at    timestamptz NOT NULL DEFAULT now()
);

-- moderation strikes (job.failed with a strike reason), one per failure and target
CREATE TABLE strikes (
    event_id     text NOT NULL,
    kind         text NOT NULL,      -- FACE | TEMPLATE
    target_id    text NOT NULL,
    job_id       text NOT NULL,
    reason_code  text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (event_id, kind)
);
CREATE INDEX strikes_by_target ON strikes (kind, target_id, occurred_at);

-- the current flag of a subject or template (a row with a null action: judged, never flagged; its
-- lock serialises the rules' decisions about one target)
CREATE TABLE flags (
    kind        text NOT NULL,
    target_id   text NOT NULL,
    action      text,               -- DISABLED | ELIMINATION_CANDIDATE | CLEARED | null
    reason      text,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, target_id)
);

-- every decision of a rule (or of an operator): who, what, why, on what evidence, from which event
CREATE TABLE rule_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    rule        text NOT NULL,
    kind        text NOT NULL,
    target_id   text NOT NULL,
    action      text NOT NULL,
    reason      text NOT NULL,
    evidence    jsonb NOT NULL,
    event_id    text
);
CREATE INDEX rule_audit_by_target ON rule_audit (kind, target_id, id);
