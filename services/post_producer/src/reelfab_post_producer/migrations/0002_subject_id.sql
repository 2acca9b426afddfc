-- one word per concept: the person whose face and consent a job uses is the subject (subject_id)
ALTER TABLE rendered_jobs RENAME COLUMN face_id TO subject_id;
ALTER INDEX rendered_jobs_by_face RENAME TO rendered_jobs_by_subject;
