-- DKIM keys, owned DNS records and per-domain DNS bookkeeping (store/dns.py): the
-- reconcile step's, scoped by domain id (the engine has already claimed the domain).

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
SELECT dns_overwrite, dns_force, dns_credentials, dns_report, dns_checked_at,
       dkim_rotate_requested_at
FROM domains WHERE id = $1;

-- name: consume_dkim_rotation
-- The rotation asked for at $2 is carried out (its keys were just made): cleared only
-- if no newer request came meanwhile.
UPDATE domains SET dkim_rotate_requested_at = NULL
WHERE id = $1 AND dkim_rotate_requested_at = $2;

-- name: set_dns_credentials
UPDATE domains SET dns_credentials = $2 WHERE id = $1;

-- name: clear_dns_force
-- Force covers one applied plan, not every later one.
UPDATE domains SET dns_force = false WHERE id = $1 AND dns_force;

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

