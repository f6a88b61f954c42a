-- The reconcile engine's queries (store/reconcile.py): host scoped, not tenant scoped.
-- A worker leases domains, converges them outside any transaction, then records the
-- generations it converged by compare-and-set and settles the job items.

-- name: claim_domains
-- Take up to $2 domains of host $1 that have unconverged objects, under a lease of $4
-- seconds for worker $3. SKIP LOCKED lets concurrent workers take different domains;
-- the lease (not a held transaction) covers the time spent talking to the backend.
-- A domain whose backend state is older than its generation (applied_generation, also
-- reset to ask for a resync) is unconverged too.
WITH candidates AS (
    SELECT d.id FROM domains d
    WHERE d.mail_host = $1
      AND d.next_attempt_at <= now()
      AND (d.lease_until IS NULL OR d.lease_until < now())
      AND (d.observed_generation < d.generation
           OR d.applied_generation < d.generation
           -- Each set read once from its partial index (a hashed subplan). Not a
           -- correlated EXISTS: the planner guesses a third of the rows lag
           -- (col < col), so it seq-scanned the mailboxes once per domain: 5 s a poll
           -- with 100,000 mailboxes, against ~1 ms this way.
           OR d.id IN (SELECT m.domain_id FROM mailboxes m
                       WHERE m.observed_generation < m.generation)
           OR d.id IN (SELECT a.domain_id FROM aliases a
                       WHERE a.observed_generation < a.generation))
    ORDER BY d.next_attempt_at, d.id
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE domains d
SET lease_owner = $3, lease_until = now() + make_interval(secs => $4)
FROM candidates c WHERE d.id = c.id
RETURNING d.*, (SELECT a.status FROM accounts a WHERE a.id = d.account_id) AS account_status;

-- name: domain_mailboxes
-- Tombstones whose Maildir already went to retention are nothing the backend serves.
SELECT * FROM mailboxes WHERE domain_id = $1
                          AND NOT (deleted AND observed_generation >= generation)
ORDER BY local_part;

-- name: domain_aliases
SELECT * FROM aliases WHERE domain_id = $1 ORDER BY address;

-- name: domain_mailboxes_lagging
-- A delta: only the mailboxes the backend does not hold yet, found through the partial
-- index mailboxes_unconverged_idx (never a scan of the domain's mailboxes).
SELECT * FROM mailboxes WHERE domain_id = $1 AND observed_generation < generation
ORDER BY local_part;

-- name: domain_aliases_lagging
-- A delta's aliases, through aliases_unconverged_idx.
SELECT * FROM aliases WHERE domain_id = $1 AND observed_generation < generation
ORDER BY address;

-- name: release_applied_domain
-- The backend holds domain $1 at generation $3 (later passes may hand it deltas until
-- the generation moves on), a domain step has not converged. Worker $2 keeps its lease:
-- the retry or failure it records next releases it; released here, another worker
-- claimed the domain in between and the retry then cleared that worker's lease too,
-- so a third claimed it while the second still ran (seen: a new mailbox handed to the
-- backend without its hash). One write of the domain row per record, the last of its
-- transaction, as every writer of a mailbox and its domain does (two writes deadlocked
-- against a mailbox creation waiting on the row).
UPDATE domains
SET applied_generation = greatest(applied_generation, $3)
WHERE id = $1 AND lease_owner = $2;

-- name: request_resync
-- The backend asked for every domain of host $1 whole (e.g. its tables were rebuilt):
-- each is claimed again and handed complete (when due: a domain in backoff or failed
-- for good keeps its schedule).
UPDATE domains SET applied_generation = 0
WHERE mail_host = $1 AND applied_generation > 0;

-- name: resync_remaining
-- Domains of host $1 still waiting for the complete pass request_resync asked for
-- (a deleted domain's pass purges it; one failed for good waits for a new intent).
SELECT count(*) FROM domains
WHERE mail_host = $1 AND applied_generation < generation AND NOT deleted;

-- name: mark_jobs_processing
UPDATE jobs SET status = 'processing', updated_at = now()
WHERE status = 'pending' AND id IN (
    SELECT ji.job_id FROM job_items ji
    WHERE ji.state = 'pending' AND ji.object_id = ANY($1::text[]));

-- name: observe_mailboxes
-- Compare-and-set: a mailbox changed again while we applied keeps its newer generation
-- unconverged and is picked up by the next pass.
UPDATE mailboxes m
SET observed_generation = u.gen,
    status = CASE WHEN m.deleted THEN 'deleting'
                  WHEN m.suspended OR EXISTS (SELECT 1 FROM accounts a
                                              WHERE a.id = m.account_id
                                                AND a.status = 'suspended')
                    THEN 'suspended'
                  ELSE 'active' END,
    last_error = NULL, updated_at = now()
FROM unnest($1::text[], $2::bigint[]) AS u(id, gen)
WHERE m.id = u.id AND m.observed_generation < u.gen AND m.generation >= u.gen;

-- name: fail_mailboxes
UPDATE mailboxes m
SET observed_generation = u.gen, status = 'failed', last_error = u.err, updated_at = now()
FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(id, gen, err)
WHERE m.id = u.id AND m.generation = u.gen;

-- name: observe_aliases
UPDATE aliases a
SET observed_generation = u.gen, last_error = NULL, updated_at = now()
FROM unnest($1::text[], $2::bigint[]) AS u(id, gen)
WHERE a.id = u.id AND a.observed_generation < u.gen AND a.generation >= u.gen;

-- name: purge_deleted_aliases
DELETE FROM aliases a
USING unnest($1::text[], $2::bigint[]) AS u(id, gen)
WHERE a.id = u.id AND a.deleted AND a.generation = u.gen;

-- name: observe_domain
-- The status follows the generation converged: a domain whose intent moved on while
-- the pass ran (set up meanwhile) keeps its status ('provisioning') rather than take
-- one computed from the newer row (it was made 'active' before being served).
UPDATE domains
SET observed_generation = $2, applied_generation = greatest(applied_generation, $2),
    status = CASE WHEN generation > $2 THEN status
                  WHEN deleted THEN 'deleting'
                  WHEN backend_enabled THEN 'active'
                  ELSE 'pending' END,
    last_error = NULL, attempts = 0, lease_owner = NULL, lease_until = NULL,
    updated_at = now()
WHERE id = $1 AND generation >= $2;

-- name: purge_deleted_domain
DELETE FROM domains WHERE id = $1 AND deleted AND generation = $2;

-- name: lease_owners
SELECT DISTINCT lease_owner FROM domains
WHERE mail_host = $1 AND lease_owner LIKE $2 || ':%' AND lease_until > now();

-- name: release_owner_leases
UPDATE domains SET lease_owner = NULL, lease_until = NULL
WHERE mail_host = $1 AND lease_owner = ANY($2::text[]);

-- name: renew_leases
-- Worker $2 extends its leases on domains $1 by $3 seconds, just before it writes to the
-- backend; returns the ids it still holds. A lease that expired and was taken by
-- another worker (a long hashing step) is not renewed: that worker applies newer state,
-- and this one must not write its older copy over it.
UPDATE domains SET lease_until = now() + make_interval(secs => $3)
WHERE id = ANY($1::text[]) AND lease_owner = $2
RETURNING id;

-- name: release_domains
-- The leases worker $2 holds on domains $1, handed back without recording anything.
UPDATE domains SET lease_owner = NULL, lease_until = NULL
WHERE id = ANY($1::text[]) AND lease_owner = $2;

-- name: retry_domain
-- Capped exponential backoff ($3 base, $4 cap, seconds) with jitter, unless the error
-- named its own delay ($5, e.g. a provider's Retry-After).
UPDATE domains
SET attempts = attempts + 1, last_error = $2,
    next_attempt_at = now() + make_interval(secs => coalesce(
        $5::float8, least($4::float8, $3::float8 * power(2, attempts)) * (0.75 + random() / 2))),
    lease_owner = NULL, lease_until = NULL, updated_at = now()
WHERE id = $1
RETURNING attempts;

-- name: fail_domain
-- A permanent failure: recorded, and not retried until the desired state changes
-- (every write that bumps a generation resets next_attempt_at).
UPDATE domains
SET status = CASE WHEN backend_enabled OR deleted THEN 'failed' ELSE status END,
    last_error = $2, next_attempt_at = 'infinity',
    lease_owner = NULL, lease_until = NULL, updated_at = now()
WHERE id = $1;

-- name: settle_job_items
-- Mark job items of the given objects done or failed from the objects' observed state.
-- An object that no longer exists was deleted: done.
WITH states AS (
    SELECT ji.job_id, ji.seq,
           CASE
             WHEN ji.object_kind = 'mailbox' THEN
               (SELECT CASE WHEN m.id IS NULL THEN 'done'
                            WHEN m.observed_generation < ji.target_generation THEN 'pending'
                            WHEN m.status = 'failed' THEN 'failed'
                            ELSE 'done' END
                FROM (SELECT 1) one LEFT JOIN mailboxes m ON m.id = ji.object_id)
             WHEN ji.object_kind = 'alias' THEN
               (SELECT CASE WHEN a.id IS NULL THEN 'done'
                            WHEN a.observed_generation < ji.target_generation THEN 'pending'
                            ELSE 'done' END
                FROM (SELECT 1) one LEFT JOIN aliases a ON a.id = ji.object_id)
             ELSE
               (SELECT CASE WHEN d.id IS NULL THEN 'done'
                            WHEN d.status = 'failed' AND d.next_attempt_at = 'infinity'
                              THEN 'failed'
                            WHEN d.observed_generation < ji.target_generation THEN 'pending'
                            ELSE 'done' END
                FROM (SELECT 1) one LEFT JOIN domains d ON d.id = ji.object_id)
           END AS new_state,
           CASE
             WHEN ji.object_kind = 'mailbox' THEN
               (SELECT last_error FROM mailboxes WHERE id = ji.object_id)
             WHEN ji.object_kind = 'domain' THEN
               (SELECT last_error FROM domains WHERE id = ji.object_id)
           END AS err
    FROM job_items ji
    WHERE ji.state = 'pending' AND ji.object_id = ANY($1::text[])
)
UPDATE job_items ji
SET state = s.new_state, error = CASE WHEN s.new_state = 'failed' THEN s.err END
FROM states s
WHERE ji.job_id = s.job_id AND ji.seq = s.seq AND s.new_state <> 'pending'
RETURNING ji.job_id;

-- name: refresh_jobs
WITH counts AS (
    SELECT job_id,
           count(*) AS total,
           count(*) FILTER (WHERE state = 'done') AS done,
           count(*) FILTER (WHERE state = 'failed') AS failed
    FROM job_items WHERE job_id = ANY($1::text[])
    GROUP BY job_id
)
UPDATE jobs j
SET done = c.done, failed = c.failed,
    progress = CASE WHEN c.total = 0 THEN 100
                    ELSE (100 * (c.done + c.failed) / c.total)::int END,
    status = CASE WHEN c.done + c.failed < c.total THEN 'processing'
                  WHEN c.failed = c.total THEN 'failed'
                  ELSE 'completed' END,
    message = CASE WHEN c.done + c.failed < c.total
                     THEN format('%s of %s done', c.done + c.failed, c.total)
                   WHEN c.failed = 0 THEN 'completed'
                   WHEN c.failed = c.total THEN 'failed'
                   ELSE format('completed with %s of %s failed', c.failed, c.total) END,
    completed_at = CASE WHEN c.done + c.failed >= c.total THEN now() END,
    updated_at = now()
FROM counts c
WHERE j.id = c.job_id AND j.status IN ('pending', 'processing')
RETURNING j.id, j.status;

-- name: expire_job_secrets
UPDATE jobs SET sealed_secrets = NULL, secrets_expire_at = NULL
WHERE secrets_expire_at IS NOT NULL AND secrets_expire_at < now();

-- name: unconverged_counts
SELECT
  (SELECT count(*) FROM domains WHERE observed_generation < generation) AS domains,
  -- Connected mailboxes are the connection worker's, not the backend's (issue 12).
  (SELECT count(*) FROM mailboxes WHERE observed_generation < generation
                                   AND domain_id IS NOT NULL) AS mailboxes,
  (SELECT count(*) FROM aliases WHERE observed_generation < generation) AS aliases;
