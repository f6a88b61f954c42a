-- Accounts, sub-accounts (resellers) and API tokens. Every query about a sub-account
-- takes the parent's id too: a reseller reaches only its own children.

-- name: auth_token
-- One round trip: the token, its state and its account. Its answer may be cached for a
-- few seconds (store/tokencache.py): the triggers of migration 0011 notify every API
-- process of each change to it, and the expiry is rechecked on every cache hit.
SELECT t.id, t.account_id, t.secret_hash, t.permissions, t.domains,
       (t.expires_at IS NOT NULL AND t.expires_at <= now()) AS expired,
       extract(epoch FROM t.expires_at)::float8 AS expires_epoch,
       (t.revoked_at IS NOT NULL) AS revoked,
       (t.last_used_at IS NULL OR t.last_used_at < now() - interval '60 seconds') AS stale,
       a.status AS account_status, (a.reseller OR a.parent_id IS NULL) AS reseller
FROM api_tokens t JOIN accounts a ON a.id = t.account_id
WHERE t.id = $1;

-- name: descendant_account
-- Account $2 if it is a descendant of account $1 (a child, or a child's child...).
WITH RECURSIVE up AS (
    SELECT id, parent_id, 0 AS depth FROM accounts WHERE id = $2
    UNION ALL
    SELECT a.id, a.parent_id, up.depth + 1
    FROM accounts a JOIN up ON a.id = up.parent_id
    WHERE up.depth < 32
)
SELECT a.id, a.status, (a.reseller OR a.parent_id IS NULL) AS reseller
FROM accounts a
WHERE a.id = $2 AND EXISTS (SELECT 1 FROM up WHERE up.parent_id = $1);

-- name: list_tokens
SELECT id, name, permissions, domains, created_at, expires_at, last_used_at
FROM api_tokens
WHERE account_id = $1 AND revoked_at IS NULL
ORDER BY created_at, id;

-- name: get_token_meta
SELECT id, name, permissions, domains, created_at, expires_at, last_used_at
FROM api_tokens WHERE account_id = $1 AND id = $2 AND revoked_at IS NULL;

-- name: revoke_token
-- The token and every token minted from it, directly or not, whatever their account (a
-- reseller's token may have minted tokens of its sub-accounts).
WITH RECURSIVE tree AS (
    SELECT id FROM api_tokens WHERE account_id = $1 AND id = $2 AND revoked_at IS NULL
    UNION
    SELECT t.id FROM api_tokens t JOIN tree ON t.parent_id = tree.id
)
UPDATE api_tokens SET revoked_at = now()
WHERE id IN (SELECT id FROM tree) AND revoked_at IS NULL
RETURNING id;

-- name: lock_root_account
-- Held until commit: concurrent first starts create exactly one root account.
SELECT pg_advisory_xact_lock($1::bigint);

-- name: account_with_usage
-- The account and its usage in one statement.
SELECT a.*,
  (SELECT count(*) FROM domains WHERE account_id = a.id AND NOT deleted) AS used_domains,
  -- Kept by migration 0012's trigger: constant time however many the account holds.
  coalesce((SELECT used FROM mailbox_usage WHERE account_id = a.id), 0)
    AS used_email_users,
  (SELECT count(*) FROM aliases WHERE account_id = a.id AND NOT deleted) AS used_aliases,
  (SELECT count(*) FROM api_tokens WHERE account_id = a.id AND revoked_at IS NULL)
    AS used_tokens,
  (SELECT count(*) FROM accounts WHERE parent_id = a.id) AS used_sub_accounts
FROM accounts a WHERE a.id = $1;

-- name: insert_sub_account
INSERT INTO accounts (id, name, email, parent_id, domain_limit, email_user_limit, reseller,
                      first_name, last_name, company_name)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING *;

-- name: list_sub_accounts
-- Oldest first, keyset: $4/$5 the (created_at, id) of the last account of the previous
-- page (NULL: from the oldest); $3 an offset on top.
SELECT * FROM accounts
WHERE parent_id = $1
  AND ($4::timestamptz IS NULL OR (created_at, id) > ($4::timestamptz, $5::text))
ORDER BY created_at, id
LIMIT $2 OFFSET $3;

-- name: count_sub_accounts
SELECT count(*) FROM accounts WHERE parent_id = $1;

-- name: get_sub_account
SELECT * FROM accounts WHERE parent_id = $1 AND id = $2;

-- name: lock_sub_account
SELECT * FROM accounts WHERE parent_id = $1 AND id = $2 FOR UPDATE;

-- name: update_sub_account
UPDATE accounts
SET email = $3, first_name = $4, last_name = $5, company_name = $6, name = $7,
    domain_limit = $8, email_user_limit = $9, updated_at = now()
WHERE parent_id = $1 AND id = $2
RETURNING *;

-- name: set_account_status
UPDATE accounts SET status = $2, updated_at = now() WHERE id = $1;

-- name: bump_account_mailboxes
-- Suspension changes what the backend renders for every mailbox of the account
-- (Dovecot nologin): bump each so the engine converges it, and answer what a job waits on.
-- Connected mailboxes are not the backend's (nothing would ever observe them): the mail
-- service refuses their sending while the account is suspended (mail_sender_by_id).
UPDATE mailboxes SET generation = generation + 1, updated_at = now()
WHERE account_id = $1 AND NOT deleted AND kind = 'managed'
RETURNING id, domain_id, generation;

-- name: wake_account_domains
-- Suspension is also domain-wide (DomainState.account_suspended: no mailbox of the
-- account logs in or sends): a new generation brings each domain to the engine whole,
-- never as a delta that would carry the new status for some mailboxes only.
UPDATE domains SET generation = generation + 1, attempts = 0, next_attempt_at = now(),
                   updated_at = now()
WHERE account_id = $1 AND NOT deleted
RETURNING mail_host;

-- name: account_mail_hosts
SELECT DISTINCT mail_host FROM domains WHERE account_id = $1;

-- name: delete_account_domains
-- Deleting an account removes its domains (and with them mailboxes and aliases) the
-- way deleting one domain does: marked deleted, converged away, then purged.
UPDATE domains
SET deleted = true, status = 'deleting', generation = generation + 1,
    attempts = 0, next_attempt_at = now(), updated_at = now()
WHERE account_id = $1 AND NOT deleted
RETURNING id, generation, mail_host;

-- name: delete_account_mailboxes
-- Connected mailboxes are disconnected at once (their credentials deleted; no domain
-- purge would ever remove them).
WITH gone AS (DELETE FROM mailboxes WHERE account_id = $1 AND kind = 'connected')
UPDATE mailboxes SET deleted = true, generation = generation + 1, updated_at = now()
WHERE account_id = $1 AND NOT deleted AND kind = 'managed';

-- name: delete_account_aliases
UPDATE aliases SET deleted = true, generation = generation + 1, updated_at = now()
WHERE account_id = $1 AND NOT deleted;

-- name: revoke_account_tokens
UPDATE api_tokens SET revoked_at = now() WHERE account_id = $1 AND revoked_at IS NULL;

-- name: finish_deleted_accounts
-- An account being deleted whose domains are all purged is removed (its tokens, jobs
-- and idempotency keys go with it by cascade); the audit log keeps its history.
DELETE FROM accounts a
WHERE a.parent_id = $1 AND a.status = 'deleting'
  AND NOT EXISTS (SELECT 1 FROM domains d WHERE d.account_id = a.id)
  AND NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.account_id = a.id)
  AND NOT EXISTS (SELECT 1 FROM aliases al WHERE al.account_id = a.id)
  AND NOT EXISTS (SELECT 1 FROM accounts c WHERE c.parent_id = a.id);

-- name: reseller_usage
SELECT a.id, a.name, a.status, a.domain_limit, a.email_user_limit,
  (SELECT count(*) FROM domains d WHERE d.account_id = a.id AND NOT d.deleted) AS domains,
  coalesce((SELECT u.used FROM mailbox_usage u WHERE u.account_id = a.id), 0)
    AS email_users
FROM accounts a WHERE a.parent_id = $1
ORDER BY a.created_at, a.id;

-- name: job_in_domains
-- Is job $1 about a domain in $2 (or a mailbox of one)? For domain-restricted tokens.
SELECT EXISTS (
    SELECT 1 FROM jobs j JOIN domains d ON d.name = ANY($2::text[])
    WHERE j.id = $1
      AND d.id IN (j.resource_id, (SELECT m.domain_id FROM mailboxes m
                                   WHERE m.id = j.resource_id)))
    -- A job about connected mailboxes (no domain row): all at the allowed domains.
    OR connected_job_in_domains($1, $2::text[]);

-- name: complete_empty_job
-- A job with nothing to wait for (e.g. suspending an account without mailboxes).
UPDATE jobs SET status = 'completed', progress = 100, message = 'completed',
                completed_at = now(), updated_at = now()
WHERE id = $1
RETURNING *;

-- name: domain_of_object
-- The domain (ASCII name) a domain, mailbox or alias id of account $2 belongs to; for
-- the domain-restriction guard in front of every handler. A connected mailbox (issue
-- 12) has no domain row: its domain is its address's.
SELECT d.name FROM domains d
WHERE d.account_id = $2
  AND d.id = (CASE
      WHEN starts_with($1, 'dom_') THEN $1
      WHEN starts_with($1, 'usr_') THEN (SELECT m.domain_id FROM mailboxes m WHERE m.id = $1)
      WHEN starts_with($1, 'ali_') THEN (SELECT a.domain_id FROM aliases a WHERE a.id = $1)
  END)
UNION ALL
SELECT split_part(m.address, '@', 2) FROM mailboxes m
WHERE starts_with($1, 'usr_') AND m.id = $1 AND m.account_id = $2 AND m.kind = 'connected';

-- name: ping
-- Keeps the token cache's LISTEN connection checked alive.
SELECT 1;
