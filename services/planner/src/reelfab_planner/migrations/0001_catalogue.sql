-- the planner's catalogue: template clips and music beds in the object store (by URI + sha256), with
-- what planning needs of them. Retiring keeps the row (jobs' lineage names it) and stops its planning.
CREATE TABLE templates (
    template_id       text PRIMARY KEY,
    uri               text NOT NULL,
    sha256            text NOT NULL UNIQUE,            -- the same clip twice is refused, naming the first
    tags              text[] NOT NULL,                 -- lower-case
    duration_s        double precision NOT NULL,
    width             int NOT NULL,
    height            int NOT NULL,
    shot              text NOT NULL CHECK (shot IN ('close-up', 'wide')),
    face_share        double precision NOT NULL,       -- of sampled frames with a face
    face_height_share double precision NOT NULL,       -- median face height / frame height
    recommended_model text,
    qc                jsonb NOT NULL DEFAULT '{}',     -- the QC's metrics when it was added
    added_at          timestamptz NOT NULL DEFAULT now(),
    retired_at        timestamptz,
    retired_reason    text
);
CREATE INDEX templates_active_tags ON templates USING gin (tags) WHERE retired_at IS NULL;

CREATE TABLE music_beds (
    music_id   text PRIMARY KEY,
    uri        text NOT NULL,
    sha256     text NOT NULL UNIQUE,
    tags       text[] NOT NULL,
    licence    text NOT NULL,
    commercial boolean NOT NULL,                       -- the licence allows commercial use
    duration_s double precision NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now()
);
