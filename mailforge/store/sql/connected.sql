-- Connected mailboxes (issue 12, store/connected.py): a mailboxes row of kind
-- 'connected' (no domain: never served by Postfix/Dovecot) and its mailbox_connections
-- row. Tenant queries take the account id as $1; the worker's are host-wide (a
-- connection test is not a question of any tenant).

-- name: conn_addresses_in_account
-- Addresses of $2 the account already has (managed or connected, tombstones that still
-- hold theirs included): 409. Never looks at other accounts (no existence leak).
SELECT address FROM mailboxes
WHERE account_id = $1 AND address = ANY($2::text[]) AND NOT (deleted AND status = 'deleted');

-- name: conn_insert_mailboxes
INSERT INTO mailboxes (id, account_id, domain_id, kind, local_part, address, name,
                       password_hash, quota_mb, daily_send_limit, signature, status)
SELECT u.id, $2, NULL, 'connected', u.local_part, u.address, u.name, '', 0, u.lim,
       u.signature, 'connecting'
FROM unnest($1::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[])
     AS u(id, local_part, address, name, lim, signature)
RETURNING id, address, generation, created_at;

-- name: conn_insert_connections
INSERT INTO mailbox_connections (
    mailbox_id, smtp_host, smtp_port, smtp_security, smtp_username,
    imap_host, imap_port, imap_security, imap_username, auth,
    sealed_smtp_password, sealed_imap_password, oauth_token_url, oauth_client_id,
    sealed_oauth_client_secret, sealed_refresh_token, save_sent, tags)
SELECT u.id, u.sh, u.sp, u.ss, u.su, u.ih, u.ip, u.isec, u.iu, u.auth, u.spw, u.ipw,
       u.turl, u.cid, u.csec, u.rtok, u.save,
       coalesce(string_to_array(u.tags, E'\x1f'), '{}')
FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
            $7::int[], $8::text[], $9::text[], $10::text[], $11::bytea[], $12::bytea[],
            $13::text[], $14::text[], $15::bytea[], $16::bytea[], $17::bool[], $18::text[])
     AS u(id, sh, sp, ss, su, ih, ip, isec, iu, auth, spw, ipw, turl, cid, csec, rtok,
          save, tags);

-- name: notify_connected
SELECT pg_notify('mailforge_connected', '');

-- name: conn_get
-- A connected mailbox of account $1 (live), its settings and test state, never a
-- sealed secret.
SELECT m.id, m.account_id, m.address, m.name, m.status, m.suspended, m.generation,
       m.last_error, m.created_at, m.updated_at,
       c.smtp_host, c.smtp_port, c.smtp_security, c.smtp_username,
       c.imap_host, c.imap_port, c.imap_security, c.imap_username, c.auth,
       c.sealed_imap_password IS NOT NULL AS imap_own_password,
       c.oauth_token_url, c.oauth_client_id, c.save_sent, c.tags, c.sent_folder,
       c.test_generation, c.tested_generation, c.test_status, c.reason, c.detail,
       c.tested_at, c.next_test_at, c.failures, c.dns_check, c.dns_checked_at
FROM mailboxes m JOIN mailbox_connections c ON c.mailbox_id = m.id
WHERE m.account_id = $1 AND m.id = $2 AND m.kind = 'connected' AND NOT m.deleted;

-- name: conn_lock
SELECT m.id, m.address, m.generation, c.*
FROM mailboxes m JOIN mailbox_connections c ON c.mailbox_id = m.id
WHERE m.account_id = $1 AND m.id = $2 AND m.kind = 'connected' AND NOT m.deleted
FOR UPDATE OF m, c;

-- name: conn_update
-- New settings or credentials ($2..): tested again from scratch (a new test
-- generation, so a test of the old settings still running cannot record its result).
UPDATE mailbox_connections
SET smtp_host = $2, smtp_port = $3, smtp_security = $4, smtp_username = $5,
    imap_host = $6, imap_port = $7, imap_security = $8, imap_username = $9, auth = $10,
    sealed_smtp_password = $11, sealed_imap_password = $12, oauth_token_url = $13,
    oauth_client_id = $14, sealed_oauth_client_secret = $15, sealed_refresh_token = $16,
    sealed_access_token = CASE WHEN $17 THEN NULL ELSE sealed_access_token END,
    access_expires_at = CASE WHEN $17 THEN NULL ELSE access_expires_at END,
    save_sent = $18, tags = $19::text[],
    test_generation = test_generation + 1, test_status = 'pending', reason = NULL,
    detail = NULL, failures = 0, next_test_at = now()
WHERE mailbox_id = $1
RETURNING test_generation;

-- name: conn_mailbox_retest
UPDATE mailboxes
SET generation = generation + 1, status = 'connecting', last_error = NULL, updated_at = now()
WHERE id = $1
RETURNING generation;

-- name: conn_claim_due
-- Up to $1 connections whose test or DNS check is due, leased for $3 seconds to worker
-- $2 (SKIP LOCKED: concurrent workers take different ones; the lease, not a held
-- transaction, covers the probe). $4: seconds between DNS checks.
WITH due AS (
    SELECT c.mailbox_id FROM mailbox_connections c
    WHERE (c.next_test_at <= now()
           OR c.dns_checked_at IS NULL
           OR c.dns_checked_at <= now() - make_interval(secs => $4::float8))
      AND (c.lease_until IS NULL OR c.lease_until < now())
    ORDER BY c.next_test_at
    LIMIT $1
    FOR UPDATE OF c SKIP LOCKED
)
UPDATE mailbox_connections c
SET lease_owner = $2, lease_until = now() + make_interval(secs => $3::float8)
FROM due, mailboxes m
WHERE c.mailbox_id = due.mailbox_id AND m.id = c.mailbox_id
RETURNING c.mailbox_id, c.test_generation, m.address, m.account_id, m.status,
          c.next_test_at <= now() AS test_due,
          (c.dns_checked_at IS NULL
           OR c.dns_checked_at <= now() - make_interval(secs => $4::float8)) AS dns_due;

-- name: conn_secrets
-- Everything needed to log in as connected mailbox $1 (sealed), for the worker and the
-- mail service; not a tenant query (callers found the id through one, or leased it).
SELECT m.id, m.address, c.*
FROM mailboxes m JOIN mailbox_connections c ON c.mailbox_id = m.id
WHERE m.id = $1 AND m.kind = 'connected' AND NOT m.deleted;

-- name: conn_store_access
-- A refreshed access token (and a rotated refresh token, if the server sent one); only
-- while the refresh token used is still the stored one (a PATCH meanwhile wins).
UPDATE mailbox_connections
SET sealed_access_token = $2, access_expires_at = $3,
    sealed_refresh_token = coalesce($4, sealed_refresh_token)
WHERE mailbox_id = $1 AND sealed_refresh_token = $5;

-- name: conn_record_test
-- The result of a test of generation $2 (compare-and-set: a change of settings since
-- bumped test_generation, and this stale result is dropped). $3 ok; $7 seconds until the
-- next test; the lease is released.
WITH c AS (
    UPDATE mailbox_connections
    SET tested_generation = $2, test_status = CASE WHEN $3 THEN 'ok' ELSE 'failed' END,
        reason = $4, detail = $5, sent_folder = CASE WHEN $3 THEN $6 ELSE sent_folder END,
        tested_at = now(), failures = CASE WHEN $3 THEN 0 ELSE failures + 1 END,
        next_test_at = now() + make_interval(secs => $7::float8),
        lease_owner = NULL, lease_until = NULL
    WHERE mailbox_id = $1 AND test_generation = $2
    RETURNING mailbox_id
), old AS (
    -- The status before this statement (the UPDATE below sees its snapshot).
    SELECT m.id, m.status FROM mailboxes m JOIN c ON c.mailbox_id = m.id
)
UPDATE mailboxes m
SET status = CASE WHEN $3 THEN 'active' ELSE 'failed' END,
    last_error = CASE WHEN $3 THEN NULL ELSE $4 END,
    observed_generation = m.generation, updated_at = now()
FROM old
WHERE m.id = old.id AND NOT m.deleted
RETURNING m.id, m.account_id, m.address, old.status AS old_status, m.status;

-- name: conn_failures
SELECT failures FROM mailbox_connections WHERE mailbox_id = $1;

-- name: conn_release
-- Give a lease back without a result (the worker could not test): due again at $3
-- seconds from now.
UPDATE mailbox_connections
SET lease_owner = NULL, lease_until = NULL,
    next_test_at = least(next_test_at, now() + make_interval(secs => $3::float8))
WHERE mailbox_id = $1 AND lease_owner = $2;

-- name: conn_record_dns
UPDATE mailbox_connections
SET dns_check = $2::jsonb, dns_checked_at = now()
WHERE mailbox_id = $1;

-- name: conn_release_dns
-- The lease of a connection whose only due work was the DNS check.
UPDATE mailbox_connections SET lease_owner = NULL, lease_until = NULL
WHERE mailbox_id = $1 AND lease_owner = $2;

-- name: conn_report_failure
-- The mail service failed to log in to an active mailbox: failed now, tested again in
-- $4 seconds (not while a test of newer settings is pending: it decides).
WITH c AS (
    UPDATE mailbox_connections
    SET test_status = 'failed', reason = $2, detail = $3, failures = failures + 1,
        next_test_at = now() + make_interval(secs => $4::float8)
    WHERE mailbox_id = $1 AND tested_generation = test_generation
    RETURNING mailbox_id
)
UPDATE mailboxes m
SET status = 'failed', last_error = $2, updated_at = now()
FROM c
WHERE m.id = c.mailbox_id AND m.status = 'active' AND NOT m.deleted
RETURNING m.id, m.account_id, m.address;

-- name: conn_delete
-- Disconnect: the row and its credentials (mailbox_connections cascades) go at once;
-- the remote mailbox is never touched.
DELETE FROM mailboxes
WHERE account_id = $1 AND id = ANY($2::text[]) AND kind = 'connected'
RETURNING id;

-- name: conn_job_items
-- Every item of a job of connected mailboxes, for the job view (the mailbox may be
-- gone: disconnected).
SELECT ji.seq, ji.object_id, ji.state, ji.error, m.address, m.status, c.reason, c.detail
FROM job_items ji
LEFT JOIN mailboxes m ON m.id = ji.object_id
LEFT JOIN mailbox_connections c ON c.mailbox_id = ji.object_id
WHERE ji.job_id = $1
ORDER BY ji.seq;

-- name: conn_lock_jobs
-- Tests of one job's mailboxes are recorded concurrently: each transaction settles its
-- own items, then waits here for the others, so its refresh (a new statement, a new
-- snapshot) counts every item settled before it; the last one finishes the job.
SELECT id FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE;
