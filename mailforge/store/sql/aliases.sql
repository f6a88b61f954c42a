-- Alias and alias-domain queries (issue 4). Tenant queries take the account id as $1.

-- name: insert_alias
INSERT INTO aliases (id, account_id, domain_id, address, targets)
VALUES ($1, $2, $3, $4, $5)
RETURNING *;

-- name: get_alias
SELECT a.*, d.name AS domain_name FROM aliases a JOIN domains d ON d.id = a.domain_id
WHERE a.account_id = $1 AND a.id = $2 AND NOT a.deleted;

-- name: lock_alias
SELECT a.*, d.name AS domain_name, d.mail_host
FROM aliases a JOIN domains d ON d.id = a.domain_id
WHERE a.account_id = $1 AND a.id = $2 AND NOT a.deleted
FOR UPDATE OF a;

-- name: update_alias_targets
UPDATE aliases SET targets = $3, generation = generation + 1, last_error = NULL,
                   updated_at = now()
WHERE account_id = $1 AND id = $2 AND NOT deleted
RETURNING *;

-- name: delete_alias
UPDATE aliases SET deleted = true, generation = generation + 1, updated_at = now()
WHERE account_id = $1 AND id = $2 AND NOT deleted
RETURNING *;

-- name: list_aliases
-- Ordered by address (unique): the keyset cursor $7 is the last address of the previous
-- page. The window count is the total only without a cursor (it counts what follows it).
SELECT a.*, d.name AS domain_name, count(*) OVER () AS total_count
FROM aliases a JOIN domains d ON d.id = a.domain_id
WHERE a.account_id = $1 AND NOT a.deleted
  AND ($2::text IS NULL OR d.name = $2)
  AND ($3::text IS NULL OR a.address ILIKE '%' || $3 || '%'
       OR array_to_string(a.targets, ',') ILIKE '%' || $3 || '%')
  AND ($6::text[] IS NULL OR d.name = ANY($6::text[]))
  AND ($7::text IS NULL OR a.address > $7)
ORDER BY a.address
LIMIT $4 OFFSET $5;

-- name: count_aliases
SELECT count(*)
FROM aliases a JOIN domains d ON d.id = a.domain_id
WHERE a.account_id = $1 AND NOT a.deleted
  AND ($2::text IS NULL OR d.name = $2)
  AND ($3::text IS NULL OR a.address ILIKE '%' || $3 || '%'
       OR array_to_string(a.targets, ',') ILIKE '%' || $3 || '%')
  AND ($4::text[] IS NULL OR d.name = ANY($4::text[]));

-- name: set_alias_of
-- Make domain $2 an alias of $3 (or none, NULL); both domains' states change, so both
-- get a new generation.
WITH target AS (
    UPDATE domains SET generation = generation + 1, next_attempt_at = now(), attempts = 0,
                       updated_at = now()
    WHERE account_id = $1 AND id IN ($2, coalesce($3, $2), coalesce($4, $2))
    RETURNING id, generation, mail_host
)
SELECT * FROM target;

-- name: update_alias_of
UPDATE domains SET alias_of = $3 WHERE account_id = $1 AND id = $2 RETURNING alias_of;

-- name: alias_domain_names
-- An alias domain whose name is not proven yet routes nothing into its target (its
-- lines would deliver mail sent to it locally, and let the target's mailboxes send as
-- it): it joins the target's maps when proven (record_domain_ownership).
SELECT name FROM domains
WHERE alias_of = $1 AND NOT deleted AND backend_enabled
  AND ownership_verified_at IS NOT NULL
ORDER BY name;

-- name: list_alias_domains
SELECT d.id, d.name, t.id AS target_id, t.name AS target_name
FROM domains d JOIN domains t ON t.id = d.alias_of
WHERE d.account_id = $1 AND NOT d.deleted AND NOT t.deleted
  AND ($2::text[] IS NULL OR (d.name = ANY($2::text[]) AND t.name = ANY($2::text[])))
ORDER BY d.name;
