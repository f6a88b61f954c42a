-- 0016: GET /v1/jobs pages newest first by keyset (created_at, id), so the list's
-- index carries the id too: a page starts where the previous one ended without
-- reading (or sorting) the jobs before it.
DROP INDEX jobs_account_created_idx;
CREATE INDEX jobs_account_created_id_idx ON jobs (account_id, created_at DESC, id DESC);
