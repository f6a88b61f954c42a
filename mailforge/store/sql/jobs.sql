-- Reading jobs (inserting them: core.sql insert_job, on the caller's transaction).
-- $restricted (text[] of domain names, NULL = unrestricted) is the request's domain
-- restriction: a restricted token sees only jobs about a domain of its list or a
-- mailbox of one, of its own account.

-- name: get_job
-- $3: the domain restriction. secrets_live: the sealed one-time secrets are still
-- readable (judged by the database's clock, the one that set the expiry).
SELECT j.*, (j.secrets_expire_at IS NULL OR j.secrets_expire_at >= now()) AS secrets_live
FROM jobs j
WHERE j.account_id = $1 AND j.id = $2
  AND ($3::text[] IS NULL OR EXISTS (
        SELECT 1 FROM domains d
        WHERE d.account_id = j.account_id AND d.name = ANY($3::text[])
          AND d.id IN (j.resource_id, (SELECT m.domain_id FROM mailboxes m
                                       WHERE m.id = j.resource_id)))
       OR connected_job_in_domains(j.id, $3::text[]));

-- name: list_jobs
-- Newest first, keyset: $5/$6 the (created_at, id) of the last job of the previous page
-- (NULL: from the newest); $3 an offset on top; $4 the domain restriction. Served by
-- jobs_account_created_id_idx.
SELECT j.* FROM jobs j
WHERE j.account_id = $1
  AND ($5::timestamptz IS NULL OR (j.created_at, j.id) < ($5::timestamptz, $6::text))
  AND ($4::text[] IS NULL OR EXISTS (
        SELECT 1 FROM domains d
        WHERE d.account_id = j.account_id AND d.name = ANY($4::text[])
          AND d.id IN (j.resource_id, (SELECT m.domain_id FROM mailboxes m
                                       WHERE m.id = j.resource_id)))
       OR connected_job_in_domains(j.id, $4::text[]))
ORDER BY j.created_at DESC, j.id DESC
LIMIT $2 OFFSET $3;

-- name: count_jobs
-- Every job the caller may see ($2: the domain restriction).
SELECT count(*) FROM jobs j
WHERE j.account_id = $1
  AND ($2::text[] IS NULL OR EXISTS (
        SELECT 1 FROM domains d
        WHERE d.account_id = j.account_id AND d.name = ANY($2::text[])
          AND d.id IN (j.resource_id, (SELECT m.domain_id FROM mailboxes m
                                       WHERE m.id = j.resource_id)))
       OR connected_job_in_domains(j.id, $2::text[]));

-- name: failed_job_items
SELECT ji.seq, ji.object_id, ji.error, m.address
FROM job_items ji LEFT JOIN mailboxes m ON m.id = ji.object_id
WHERE ji.job_id = $1 AND ji.state = 'failed'
ORDER BY ji.seq;
