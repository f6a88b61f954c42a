-- Core named queries of the store. Each begins with a "-- name: <name>" line; the store
-- loads every .sql file of this folder once (mailforge/store/queries.py); names are unique
-- across files. Queries that touch tenant data take the account id as a parameter:
-- scoping lives here, not in the API handlers.

-- name: root_account
SELECT id FROM accounts WHERE parent_id IS NULL ORDER BY created_at LIMIT 1;

-- name: insert_account
INSERT INTO accounts (id, name, email, parent_id, domain_limit, email_user_limit)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: get_account
SELECT * FROM accounts WHERE id = $1;

-- name: lock_account
SELECT * FROM accounts WHERE id = $1 FOR UPDATE;

-- name: insert_token
INSERT INTO api_tokens (id, account_id, name, secret_hash, permissions, domains, expires_at,
                        parent_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING created_at;

-- name: minting_token
-- The token minting another, locked so that a revocation cannot slip in between.
SELECT expires_at, revoked_at FROM api_tokens WHERE id = $1 FOR UPDATE;

-- name: touch_token
UPDATE api_tokens SET last_used_at = now() WHERE id = $1;

-- name: owned_domain_names
SELECT name FROM domains WHERE account_id = $1 AND name = ANY($2::text[]) AND NOT deleted;

-- name: get_domain
SELECT * FROM domains WHERE account_id = $1 AND id = $2;

-- name: touch_domain_for_work
UPDATE domains SET attempts = 0, next_attempt_at = now()
WHERE id = $1 AND next_attempt_at > now();

-- name: insert_job
INSERT INTO jobs (id, account_id, type, resource_id, total, message, result,
                  sealed_secrets, secrets_expire_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)
RETURNING *;

-- name: insert_job_items
INSERT INTO job_items (job_id, seq, object_kind, object_id, target_generation)
SELECT $1, s, k, o, g FROM unnest($2::int[], $3::text[], $4::text[], $5::bigint[])
    AS u(s, k, o, g);

-- name: get_idempotent
-- The key's state; lease_expired is judged by the database's clock, the one that set it.
SELECT request_hash, status, sealed_body, claimant, job_id,
       (lease_until IS NULL OR lease_until <= now()) AS lease_expired
FROM idempotency_keys
WHERE account_id = $1 AND key = $2;

-- name: claim_idempotent
-- Claim a key before doing the work: of two concurrent requests with one key, one wins.
-- $4 names the claimant, $5 is the lease in seconds.
INSERT INTO idempotency_keys (account_id, key, request_hash, status, claimant, lease_until)
VALUES ($1, $2, $3, 0, $4, now() + make_interval(secs => $5))
ON CONFLICT (account_id, key) DO NOTHING
RETURNING key;

-- name: take_over_idempotent
-- Take over the claim of a dead request (compare-and-set on the old claimant, so of two
-- retries only one takes over); returns the job the dead request created, if any.
UPDATE idempotency_keys
SET claimant = $4, lease_until = now() + make_interval(secs => $5)
WHERE account_id = $1 AND key = $2 AND status = 0 AND claimant IS NOT DISTINCT FROM $3
RETURNING key, job_id;

-- name: renew_idempotent
UPDATE idempotency_keys SET lease_until = now() + make_interval(secs => $4)
WHERE account_id = $1 AND key = $2 AND status = 0 AND claimant = $3;

-- name: idempotent_job
-- Called in the transaction that creates a job: the job and the answer-to-be are tied
-- together atomically. The first job of the request is the one it answers with.
UPDATE idempotency_keys SET job_id = COALESCE(job_id, $4)
WHERE account_id = $1 AND key = $2 AND status = 0 AND claimant = $3;

-- name: put_idempotent
UPDATE idempotency_keys
SET status = $4, sealed_body = $5, claimant = NULL, lease_until = NULL
WHERE account_id = $1 AND key = $2 AND status = 0 AND claimant = $3
RETURNING key;

-- name: release_idempotent
-- A refused or failed attempt: the key is free again, unless it already created a job
-- (then the claim is let go at once, and the next retry answers with that job).
WITH freed AS (
    DELETE FROM idempotency_keys
    WHERE account_id = $1 AND key = $2 AND status = 0 AND claimant = $3 AND job_id IS NULL
    RETURNING key
)
UPDATE idempotency_keys SET claimant = NULL, lease_until = now()
WHERE account_id = $1 AND key = $2 AND status = 0 AND claimant = $3
  AND job_id IS NOT NULL;

-- name: notify_work
SELECT pg_notify('mailforge_work', $1);

