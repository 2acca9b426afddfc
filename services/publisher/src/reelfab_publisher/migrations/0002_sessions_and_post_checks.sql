-- review-page sessions live on the server: the cookie holds a random session id (stored here as its
-- hash), never the operator's token; logout ends a session wherever its cookie is, and replacing or
-- revoking the operator's token ends every session it opened
CREATE TABLE review_sessions (
    id_sha256   text PRIMARY KEY,
    operator    text NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);
CREATE INDEX review_sessions_by_operator ON review_sessions (operator);

-- a job stopped by a consent withdrawal while bytes were going up: the platform may still have made the
-- post (a chunk in flight cannot be recalled); the poster asks, and a post made anyway joins the
-- takedown queue
ALTER TABLE reviews ADD COLUMN verify_post boolean NOT NULL DEFAULT false;
CREATE INDEX reviews_verify_post ON reviews (next_attempt_at) WHERE verify_post;
