-- DKIM keys and DNS ownership (issue 3). Tenant-facing queries take the account id.

-- name: dkim_keys_of
SELECT * FROM dkim_keys WHERE domain_id = $1 ORDER BY created_at, selector;

-- name: insert_dkim_key
INSERT INTO dkim_keys (id, domain_id, algorithm, selector, public_key, sealed_private)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (domain_id, selector) DO NOTHING;

-- name: set_dkim_state
UPDATE dkim_keys SET state = $2, state_changed_at = now() WHERE id = $1 AND state <> $2;

-- name: delete_dkim_key
DELETE FROM dkim_keys WHERE id = $1;

-- name: active_signing_keys
-- The signer's whole table: per live domain of this host and algorithm, the newest key
-- whose record verified (published) or that already signs (active).
SELECT DISTINCT ON (d.name, k.algorithm)
       d.name AS domain, k.domain_id, k.id, k.algorithm, k.selector, k.sealed_private
FROM dkim_keys k JOIN domains d ON d.id = k.domain_id
WHERE d.mail_host = $1 AND NOT d.deleted AND k.state IN ('published', 'active')
  -- A name not proven (its delegation) is signed for by no one.
  AND d.ownership_verified_at IS NOT NULL
ORDER BY d.name, k.algorithm, k.created_at DESC;

-- name: owned_records
SELECT name, rtype, content FROM dns_owned_records WHERE domain_id = $1;

-- name: clear_owned_records
DELETE FROM dns_owned_records WHERE domain_id = $1;

-- name: insert_owned_records
INSERT INTO dns_owned_records (domain_id, name, rtype, content)
SELECT $1, n, t, c FROM unnest($2::text[], $3::text[], $4::text[]) AS u(n, t, c)
ON CONFLICT DO NOTHING;

-- name: set_dns_report
UPDATE domains SET dns_report = $2::jsonb, dns_checked_at = now(), dns_revisit_at = $3
WHERE id = $1;

-- name: requeue_dns_due
-- Time-based DKIM transitions (rotation, retirement) fall due: a new generation makes
-- the engine visit the domain again, level-triggered from the stored due time.
UPDATE domains
SET generation = generation + 1, next_attempt_at = now(), attempts = 0,
    dns_revisit_at = NULL, updated_at = now()
WHERE mail_host = $1 AND dns_revisit_at <= now() AND NOT deleted AND backend_enabled
RETURNING id;

-- name: domain_dns_options
SELECT dns_overwrite, dns_force, dns_credentials, dns_report, dns_checked_at
FROM domains WHERE id = $1;

-- name: set_dns_options
UPDATE domains SET dns_overwrite = $2, dns_force = $3 WHERE id = $1;

-- name: set_dns_credentials
UPDATE domains SET dns_credentials = $2 WHERE id = $1;

-- name: request_dkim_rotation
UPDATE domains
SET generation = generation + 1, next_attempt_at = now(), attempts = 0,
    last_error = NULL, updated_at = now()
WHERE account_id = $1 AND id = $2 AND NOT deleted AND backend_enabled
RETURNING *;

-- name: request_domain_delete
UPDATE domains
SET deleted = true, status = 'deleting', generation = generation + 1,
    next_attempt_at = now(), attempts = 0, last_error = NULL, updated_at = now()
WHERE account_id = $1 AND id = $2
RETURNING *;

-- name: domain_by_name_any
SELECT * FROM domains WHERE name = $1;

-- name: allow_dns_changes
-- The operator allows a large plan and/or replacing their own SPF/DMARC; a new
-- generation (and a cleared permanent failure) makes the engine apply it.
UPDATE domains
SET dns_force = $2, dns_overwrite = $3, generation = generation + 1,
    next_attempt_at = now(), attempts = 0, last_error = NULL,
    status = CASE WHEN status = 'failed' THEN 'provisioning' ELSE status END,
    updated_at = now()
WHERE name = $1 AND NOT deleted
RETURNING mail_host, dns_force, dns_overwrite;

-- name: clear_dns_force
-- Force covers one applied plan, not every later one.
UPDATE domains SET dns_force = false WHERE id = $1 AND dns_force;

-- name: domain_served
SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1 AND NOT deleted AND backend_enabled
                                     AND ownership_verified_at IS NOT NULL);

-- name: record_domain_ownership
-- The name's delegation was found pointing at its provider: recorded once. A new
-- generation (intent changed: the backend must now serve it) makes the engine render
-- its maps (and record its mailboxes, which waited unobserved); a domain that gave up
-- waiting is provisioned again. The domain it is an
-- alias of (if any) gets a new generation too: its maps now route the alias domain.
WITH proven AS (
    UPDATE domains
    SET ownership_verified_at = now(), generation = generation + 1, next_attempt_at = now(),
        attempts = 0, last_error = NULL,
        status = CASE WHEN status = 'failed' AND backend_enabled THEN 'provisioning'
                      ELSE status END,
        updated_at = now()
    WHERE id = $1 AND ownership_verified_at IS NULL AND NOT deleted
    RETURNING mail_host, alias_of
), revived AS (
    -- Mailboxes failed by a domain that gave up waiting are served now: observed again.
    UPDATE mailboxes m
    SET generation = m.generation + 1, updated_at = now()
    WHERE m.domain_id = $1 AND m.status = 'failed' AND NOT m.deleted
      AND EXISTS (SELECT 1 FROM proven)
    RETURNING m.id
), target AS (
    UPDATE domains t
    SET generation = t.generation + 1, next_attempt_at = now(), attempts = 0,
        updated_at = now()
    FROM proven p WHERE t.id = p.alias_of AND NOT t.deleted
    RETURNING t.id
)
SELECT mail_host FROM proven;

-- name: forget_unset_domain
-- Undo a connect whose zone could not be taken (zone_exists): only a domain never set
-- up, with nothing under it.
DELETE FROM domains
WHERE account_id = $1 AND id = $2 AND NOT backend_enabled AND observed_generation = 0
  AND NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.domain_id = domains.id)
  AND NOT EXISTS (SELECT 1 FROM aliases a WHERE a.domain_id = domains.id);
