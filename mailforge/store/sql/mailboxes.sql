-- Mailbox lifecycle queries (issue 4): tombstones and retention, updates, deletes,
-- restores, listing with sort. Tenant queries take the account id as $1.

-- name: tombstone_mailboxes
-- The backend moved these deleted mailboxes' Maildirs to retention: keep the row as a
-- tombstone (restorable until purge_after), its address free again.
UPDATE mailboxes m
SET observed_generation = u.gen, status = 'deleted', last_error = NULL, updated_at = now()
FROM unnest($1::text[], $2::bigint[]) AS u(id, gen)
WHERE m.id = u.id AND m.deleted AND m.generation = u.gen;

-- name: list_mailboxes_page
-- {order} is replaced by a whitelisted ORDER BY clause (store/mailboxes.py SORTS) and
-- {after} by the keyset condition of a cursor (its values are parameters from $8) or
-- TRUE. Tombstones are listed only when asked for with status=deleted. Only the columns
-- the API shows (never the password hash). The total comes from a count query: a
-- count(*) OVER () here made PostgreSQL materialise every row of the account.
-- A connected mailbox (issue 12) has no domain row: its domain is its address's, and
-- its endpoints are its provider's ($8: 'managed' or 'connected', NULL: both).
SELECT m.id, m.account_id, m.domain_id, m.local_part, m.address, m.name, m.quota_mb,
       m.daily_send_limit, m.signature, m.suspended, m.deleted, m.status, m.generation,
       m.observed_generation, m.last_error, m.deleted_at, m.purge_after, m.created_at,
       m.updated_at, m.kind,
       coalesce(d.name, split_part(m.address, '@', 2)) AS domain_name,
       c.smtp_host, c.smtp_port, c.imap_host, c.imap_port
FROM mailboxes m
LEFT JOIN domains d ON d.id = m.domain_id
LEFT JOIN mailbox_connections c ON c.mailbox_id = m.id
WHERE m.account_id = $1
  AND ($2::text IS NULL OR d.name = $2)
  AND (CASE WHEN $3::text IS NULL THEN m.status <> 'deleted' ELSE m.status = $3 END)
  AND ($4::text IS NULL OR m.address ILIKE '%' || $4 || '%' OR m.name ILIKE '%' || $4 || '%')
  AND ($7::text[] IS NULL
       OR coalesce(d.name, split_part(m.address, '@', 2)) = ANY($7::text[]))
  AND ($8::text IS NULL OR m.kind = $8)
  AND {after}
ORDER BY {order}
LIMIT $5 OFFSET $6;

-- name: count_mailboxes_page
SELECT count(*)
FROM mailboxes m LEFT JOIN domains d ON d.id = m.domain_id
WHERE m.account_id = $1
  AND ($2::text IS NULL OR d.name = $2)
  AND (CASE WHEN $3::text IS NULL THEN m.status <> 'deleted' ELSE m.status = $3 END)
  AND ($4::text IS NULL OR m.address ILIKE '%' || $4 || '%' OR m.name ILIKE '%' || $4 || '%')
  AND ($5::text[] IS NULL
       OR coalesce(d.name, split_part(m.address, '@', 2)) = ANY($5::text[]))
  AND ($6::text IS NULL OR m.kind = $6);

-- name: count_account_mailboxes
-- The total of an unfiltered list (no domain, search or restriction) from the counter
-- rows of migration 0011 (constant time), and how many rows it summed (folded when
-- they pile up).
SELECT coalesce(sum(n) FILTER (WHERE CASE WHEN $2::text IS NULL THEN status <> 'deleted'
                                          ELSE status = $2 END), 0) AS total,
       count(*) AS pieces
FROM mailbox_counts WHERE account_id = $1;

-- name: fold_mailbox_counts
-- Merge the counter rows of account $1 into one per status. Atomic: a concurrent fold
-- waits for the rows this one deletes and then skips them; rows added meanwhile stay.
WITH gone AS (DELETE FROM mailbox_counts WHERE account_id = $1 RETURNING status, n)
INSERT INTO mailbox_counts (account_id, status, n)
SELECT $1, status, sum(n) FROM gone GROUP BY status HAVING sum(n) <> 0;

-- name: fold_all_mailbox_counts
-- The same for up to 1000 accounts whose counter rows piled up (the daemon, every minute).
WITH many AS (
    SELECT account_id FROM mailbox_counts GROUP BY account_id HAVING count(*) > $1
    LIMIT 1000
), gone AS (
    DELETE FROM mailbox_counts c USING many WHERE c.account_id = many.account_id
    RETURNING c.account_id, c.status, c.n
)
INSERT INTO mailbox_counts (account_id, status, n)
SELECT account_id, status, sum(n) FROM gone GROUP BY 1, 2 HAVING sum(n) <> 0;

-- name: lock_mailbox
-- Connected mailboxes too (domain: the address's; no mail host: nothing to wake).
SELECT m.*, coalesce(d.name, split_part(m.address, '@', 2)) AS domain_name, d.mail_host
FROM mailboxes m LEFT JOIN domains d ON d.id = m.domain_id
WHERE m.account_id = $1 AND m.id = $2
FOR UPDATE OF m;

-- name: update_mailbox
-- $8: whether the backend must see the change (a new generation and a job; never for a
-- connected mailbox, which the backend never sees). $4: a new
-- password sealed for the worker to hash (NULL: unchanged); the old hash serves until
-- the worker has made the new one (pending_passwords.py).
UPDATE mailboxes
SET name = $3, pending_password = coalesce($4, pending_password), quota_mb = $5,
    daily_send_limit = $6, signature = $7,
    suspended = $9,
    generation = generation + CASE WHEN $8 THEN 1 ELSE 0 END,
    status = CASE WHEN $8 AND status = 'failed' THEN 'pending' ELSE status END,
    updated_at = now()
WHERE account_id = $1 AND id = $2 AND NOT deleted
RETURNING *;

-- name: delete_mailboxes
-- Mark mailboxes deleted: the backend stops serving them and moves their Maildirs to
-- retention; the rows stay as tombstones until purge_after ($3 seconds from now).
UPDATE mailboxes
SET deleted = true, deleted_at = now(),
    purge_after = now() + make_interval(secs => $3::float8),
    generation = generation + 1, status = 'deleting', updated_at = now()
WHERE account_id = $1 AND id = ANY($2::text[]) AND NOT deleted AND kind = 'managed'
RETURNING id, domain_id, address, generation;

-- name: mailboxes_by_ids
SELECT m.id, m.deleted, m.domain_id, m.kind, m.generation, d.mail_host,
       coalesce(d.name, split_part(m.address, '@', 2)) AS domain_name
FROM mailboxes m LEFT JOIN domains d ON d.id = m.domain_id
WHERE m.account_id = $1 AND m.id = ANY($2::text[]);

-- name: restore_mailbox
UPDATE mailboxes
SET deleted = false, deleted_at = NULL, purge_after = NULL,
    generation = generation + 1, status = 'pending', last_error = NULL, updated_at = now()
WHERE account_id = $1 AND id = $2 AND deleted AND purge_after > now() AND kind = 'managed'
RETURNING *;

-- name: live_address_taken
-- $2: the account (its connected mailboxes hold their addresses in it only).
SELECT EXISTS (SELECT 1 FROM mailboxes WHERE address = $1 AND NOT deleted
               AND (kind = 'managed' OR account_id = $2))
    OR EXISTS (SELECT 1 FROM aliases WHERE address = $1);

-- name: expired_tombstones
-- Tombstones of host $1 whose retention is over and whose Maildir was moved (status
-- 'deleted'): the retained data can be destroyed.
SELECT m.id, m.local_part, d.name AS domain_name
FROM mailboxes m JOIN domains d ON d.id = m.domain_id
WHERE m.deleted AND m.status = 'deleted' AND m.purge_after < now() AND d.mail_host = $1
ORDER BY m.purge_after
LIMIT $2;

-- name: purge_tombstones
DELETE FROM mailboxes
WHERE id = ANY($1::text[]) AND deleted AND status = 'deleted' AND purge_after < now();

-- name: taken_in_domains
-- Every address taken (mailbox, alias, or held by a tombstone still being deleted) in
-- the given domains of account $1: the name generator avoids them all.
SELECT address FROM mailboxes WHERE account_id = $1 AND domain_id = ANY($2::text[])
                                AND NOT (deleted AND status = 'deleted')
UNION
SELECT address FROM aliases WHERE account_id = $1 AND domain_id = ANY($2::text[]);

-- name: set_job_secrets
UPDATE jobs SET sealed_secrets = $2,
                secrets_expire_at = now() + make_interval(secs => $3::float8)
WHERE id = $1;

-- name: taken_addresses
-- Addresses are unique on the whole host, so this looks across accounts; callers pass
-- only addresses at the caller's own domains (a name belongs to one account).
-- A deleted mailbox holds its address until the backend has moved its Maildir away.
-- Connected mailboxes count only in the caller's account ($2): another account's
-- connection of the address is neither an obstacle nor revealed.
SELECT address FROM mailboxes WHERE address = ANY($1::text[])
                                AND NOT (deleted AND status = 'deleted')
                                AND (kind = 'managed' OR account_id = $2)
UNION
SELECT address FROM aliases WHERE address = ANY($1::text[]);

-- name: insert_mailboxes
-- One statement for the whole batch. No hash yet (''): the password is sealed in
-- pending_password and hashed by the worker before the backend sees the mailbox.
INSERT INTO mailboxes (id, account_id, domain_id, local_part, address, name, password_hash,
                       pending_password, quota_mb)
SELECT u.id, $2, $3, u.local_part, u.address, u.name, '', u.sealed, u.quota
FROM unnest($1::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::int[])
     AS u(id, local_part, address, name, sealed, quota)
RETURNING id, address, local_part, generation, created_at;

-- name: share_account
-- Key share: creations of one account do not wait for each other, but an alias
-- creation (which locks the row: store/aliases.py) waits for them and they for it, so
-- an address is never given to both.
SELECT id FROM accounts WHERE id = $1 FOR KEY SHARE;

-- name: pending_passwords
-- Sealed new passwords waiting in the given domains (the engine's claimed batch).
SELECT id, pending_password FROM mailboxes
WHERE domain_id = ANY($1::text[]) AND pending_password IS NOT NULL;

-- name: settle_pending_passwords
-- The hashes made by the worker; each written only where the sealed value is still the
-- one hashed (a newer one stored meanwhile stays for the next pass), and wiped with it.
UPDATE mailboxes m
SET password_hash = u.hash, pending_password = NULL
FROM unnest($1::text[], $2::bytea[], $3::text[]) AS u(id, sealed, hash)
WHERE m.id = u.id AND m.pending_password = u.sealed
RETURNING m.id;

-- name: fail_pending_passwords
-- Sealed values that cannot be opened: wiped; the mailbox gets $3, which no password
-- verifies against (also one that had a hash: the change may have been meant to revoke
-- a leaked password, which must not stay valid). A live mailbox is recorded failed with $4 at its
-- current generation (its job items settle); a deleted one needs no password.
UPDATE mailboxes m
SET pending_password = NULL,
    password_hash = $3,
    observed_generation = CASE WHEN m.deleted THEN m.observed_generation
                               ELSE m.generation END,
    status = CASE WHEN m.deleted THEN m.status ELSE 'failed' END,
    last_error = CASE WHEN m.deleted THEN m.last_error ELSE $4 END,
    updated_at = now()
FROM unnest($1::text[], $2::bytea[]) AS u(id, sealed)
WHERE m.id = u.id AND m.pending_password = u.sealed
RETURNING m.id, m.deleted;

-- name: get_mailbox
SELECT m.*, coalesce(d.name, split_part(m.address, '@', 2)) AS domain_name,
       c.smtp_host, c.smtp_port, c.imap_host, c.imap_port
FROM mailboxes m
LEFT JOIN domains d ON d.id = m.domain_id
LEFT JOIN mailbox_connections c ON c.mailbox_id = m.id
WHERE m.account_id = $1 AND m.id = $2;
