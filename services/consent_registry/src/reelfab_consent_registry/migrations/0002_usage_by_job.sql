-- a job's use of a face is counted once, however often the job is delivered (a crashed attempt's
-- redelivery asks again with the same job id): the uses counted, keyed by subject and job
CREATE TABLE usage_jobs (
    subject_id      text NOT NULL REFERENCES subjects,
    job_id          text NOT NULL,
    day             date NOT NULL,        -- the day whose uses (table usage) it was counted in
    consumed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_id, job_id)
);
