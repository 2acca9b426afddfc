-- the jobs this service rendered, by subject: when the subject's consent is revoked or erased, what was
-- made from the face (the job's media in the store, its copies of the face) is removed
CREATE TABLE rendered_jobs (
    job_id      text PRIMARY KEY,
    face_id     text NOT NULL,
    rendered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rendered_jobs_by_face ON rendered_jobs (face_id);
