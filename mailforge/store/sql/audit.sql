-- The audit log: append-only (triggers in migration 0004 refuse UPDATE/DELETE/TRUNCATE).

-- name: insert_audit
INSERT INTO audit_log (id, account_id, actor_account_id, token_id, action, method, route,
                       resource_id, status, client_addr, request_id, summary)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb);

-- name: list_audit
-- Newest first; $2 is a cursor (a seq: entries older than it), then optional filters.
SELECT seq, id, at, account_id, actor_account_id, token_id, action, method, route,
       resource_id, status, client_addr, request_id, summary
FROM audit_log
WHERE account_id = $1
  AND ($2::bigint IS NULL OR seq < $2)
  AND ($3::text IS NULL OR action = $3)
  AND ($4::text IS NULL OR token_id = $4)
  AND ($5::text IS NULL OR resource_id = $5)
  AND ($6::timestamptz IS NULL OR at >= $6)
  AND ($7::timestamptz IS NULL OR at < $7)
ORDER BY seq DESC
LIMIT $8;
