-- Domains: connect, read, list, set up, delete (store/domains.py). Tenant queries take
-- the account id and, where they list or change, the token's domain restriction
-- (NULL = unrestricted).

-- name: lock_domain_namespace
-- Held until commit: serialises connects of names under one top-level label ($2).
SELECT pg_advisory_xact_lock($1::int, hashtext($2::text));

-- name: domain_name_relatives
-- Domains (any account, deleted ones too until purged) at, above or under the names $1:
-- the same name, a parent ($2: every proper parent of the names), or a descendant
-- (reverse(name) in [$3[i], $4[i]): a byte range served by domains_name_reversed_idx).
SELECT d.name, d.account_id FROM domains d
WHERE d.name = ANY($1::text[]) OR d.name = ANY($2::text[])
UNION
SELECT d.name, d.account_id
FROM unnest($3::text[], $4::text[]) AS r(lo, hi)
JOIN domains d ON reverse(d.name) ~>=~ r.lo AND reverse(d.name) ~<~ r.hi;

-- name: count_domains
SELECT count(*) FROM domains WHERE account_id = $1 AND NOT deleted;

-- name: insert_domain
INSERT INTO domains (id, account_id, name, unicode_name, mail_host, dns_provider)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: get_domain_by_name
SELECT * FROM domains WHERE account_id = $1 AND name = $2;

-- name: get_domain_with_reputation
-- One domain of account $1 and its reputation counts over the last $3 days.
SELECT d.*, r.sent, r.bounces, r.complaints
FROM domains d CROSS JOIN LATERAL domain_reputation_counts(d.id, $3::int) r
WHERE d.account_id = $1 AND d.id = $2;

-- name: list_domains_page
-- A page of account $1's domains within restriction $4, oldest first, after the
-- keyset position ($5 created_at, $6 id; NULL = from the start) and $3 more, each with
-- its reputation counts over the last $7 days: one round trip, and the counts are
-- computed only for the page's rows (the page is cut before the lateral join).
SELECT p.*, r.sent, r.bounces, r.complaints
FROM (SELECT * FROM domains d
      WHERE d.account_id = $1 AND ($4::text[] IS NULL OR d.name = ANY($4::text[]))
        AND ($5::timestamptz IS NULL OR (d.created_at, d.id) > ($5::timestamptz, $6::text))
      ORDER BY d.created_at, d.id
      LIMIT $2 OFFSET $3) p
CROSS JOIN LATERAL domain_reputation_counts(p.id, $7::int) r
ORDER BY p.created_at, p.id;

-- name: count_all_domains
SELECT count(*) FROM domains
WHERE account_id = $1 AND ($2::text[] IS NULL OR name = ANY($2::text[]));

-- name: request_domain_setup
-- Asking again for a domain already set up (and not failed for good) is no change of
-- intent: no new generation (a pass in flight, e.g. the one check-ns queued, covers
-- it and the job completes with it), only an immediate retry.
UPDATE domains
SET backend_enabled = true,
    status = CASE WHEN backend_enabled AND status <> 'failed' THEN status
                  ELSE 'provisioning' END,
    generation = generation + CASE WHEN backend_enabled AND status <> 'failed' THEN 0
                                   ELSE 1 END,
    attempts = 0, next_attempt_at = now(), last_error = NULL, updated_at = now()
WHERE account_id = $1 AND id = $2 AND NOT deleted
  AND ($3::text[] IS NULL OR name = ANY($3::text[]))
RETURNING *;

-- name: bump_alias_target
-- The domain that alias domain $1 points at routes it (DomainState.alias_domains): the
-- alias being set up or deleted changes that domain-wide, so it gets a new generation
-- too (which brings the engine's complete state of it, not a delta).
UPDATE domains t
SET generation = t.generation + 1, next_attempt_at = now(), attempts = 0, updated_at = now()
FROM domains a
WHERE a.id = $1 AND t.id = a.alias_of AND NOT t.deleted
RETURNING t.mail_host;

-- name: request_dkim_rotation
-- Records the intent only (the DNS step makes the keys): a domain of account $1 within
-- restriction $3 that is set up and not being deleted; anything else changes nothing.
UPDATE domains
SET dkim_rotate_requested_at = now(), generation = generation + 1,
    next_attempt_at = now(), attempts = 0, last_error = NULL, updated_at = now()
WHERE account_id = $1 AND id = $2 AND NOT deleted AND backend_enabled
  AND ($3::text[] IS NULL OR name = ANY($3::text[]))
RETURNING *;

-- name: request_domain_delete
UPDATE domains
SET deleted = true, status = 'deleting', generation = generation + 1,
    next_attempt_at = now(), attempts = 0, last_error = NULL, updated_at = now()
WHERE account_id = $1 AND id = $2
  AND ($3::text[] IS NULL OR name = ANY($3::text[]))
RETURNING *;

-- name: forget_unset_domain
-- Undo a connect whose zone could not be taken (zone_exists): only a domain never set
-- up, with nothing under it.
DELETE FROM domains
WHERE account_id = $1 AND id = $2 AND NOT backend_enabled AND observed_generation = 0
  AND NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.domain_id = domains.id)
  AND NOT EXISTS (SELECT 1 FROM aliases a WHERE a.domain_id = domains.id);

-- name: domain_served
-- For the public MTA-STS and autoconfig answers, which name no account.
SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1 AND NOT deleted AND backend_enabled
                                     AND ownership_verified_at IS NOT NULL);

-- name: domain_by_name_any
-- Operator CLI only (no tenant): the domain of that name, whoever's it is.
SELECT * FROM domains WHERE name = $1;

-- name: allow_dns_changes
-- Operator CLI only: the operator allows a large plan and/or replacing their own
-- SPF/DMARC; a new generation (and a cleared permanent failure) makes the engine apply it.
UPDATE domains
SET dns_force = $2, dns_overwrite = $3, generation = generation + 1,
    next_attempt_at = now(), attempts = 0, last_error = NULL,
    status = CASE WHEN status = 'failed' THEN 'provisioning' ELSE status END,
    updated_at = now()
WHERE name = $1 AND NOT deleted
RETURNING mail_host, dns_force, dns_overwrite;
