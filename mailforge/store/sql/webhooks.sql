-- Event webhooks: registrations (per account) and their persisted delivery queue.

-- name: webhook_insert
INSERT INTO webhooks (id, account_id, url, events, sealed_secret)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, account_id, url, events, created_at;

-- name: webhook_list
-- A page ($2 rows) of the account's webhooks, oldest first: after the keyset ($3
-- created_at, $4 id) when given, else from offset $5.
SELECT id, account_id, url, events, created_at FROM webhooks
WHERE account_id = $1
  AND ($3::timestamptz IS NULL OR (created_at, id) > ($3::timestamptz, $4::text))
ORDER BY created_at, id
LIMIT $2 OFFSET $5;

-- name: webhook_count
SELECT count(*) FROM webhooks WHERE account_id = $1;

-- name: webhook_get
SELECT id, account_id, url, events, created_at FROM webhooks
WHERE account_id = $1 AND id = $2;

-- name: webhook_delete
DELETE FROM webhooks WHERE account_id = $1 AND id = $2 RETURNING id;

-- name: webhook_enqueue
-- A delivery for every webhook of the account subscribed to the event.
INSERT INTO webhook_deliveries (webhook_id, event_id, event, payload)
SELECT w.id, $3, $2, $4::jsonb FROM webhooks w
WHERE w.account_id = $1 AND $2 = ANY (w.events)
ON CONFLICT (webhook_id, event_id) DO NOTHING;

-- name: webhook_claim_due
-- Claim due deliveries by pushing their next attempt past a lease: a crashed worker's
-- claim expires and the delivery is tried again (at-least-once).
UPDATE webhook_deliveries d
SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM webhooks w
WHERE w.id = d.webhook_id AND d.id IN (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.webhook_id, d.event_id, d.event, d.payload::text AS payload, d.attempts,
          w.url, w.sealed_secret, w.account_id;

-- name: webhook_delivered
UPDATE webhook_deliveries
SET state = 'delivered', delivered_at = now(), last_status = $2, last_error = NULL
WHERE id = $1;

-- name: webhook_retry
UPDATE webhook_deliveries
SET state = CASE WHEN attempts >= $5 THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => $4), last_status = $2, last_error = $3
WHERE id = $1;

-- name: webhook_deliveries_of
-- A page ($3 rows) of the deliveries of webhook $2 of account $1, newest first: below
-- delivery $4 when given, else from offset $5.
SELECT d.id, d.event_id, d.event, d.state, d.attempts, d.last_status, d.last_error,
       d.created_at, d.delivered_at, d.next_attempt_at
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
WHERE w.account_id = $1 AND d.webhook_id = $2 AND ($4::bigint IS NULL OR d.id < $4)
ORDER BY d.id DESC LIMIT $3 OFFSET $5;

-- name: webhook_deliveries_count
SELECT count(*) FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
WHERE w.account_id = $1 AND d.webhook_id = $2;

-- name: jobs_finished_info
-- The engine reports finished jobs (of any account): what their webhook events say.
SELECT id, account_id, type, status, resource_id, message, completed_at
FROM jobs WHERE id = ANY ($1::text[]);
