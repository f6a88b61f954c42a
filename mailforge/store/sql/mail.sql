-- Mail through the API (issue 6): send counting, warm-up, inbound scanning,
-- reputation and webhooks.

-- name: mail_sender_by_address
SELECT m.id, m.account_id, m.domain_id, m.address, m.name, m.signature, m.daily_send_limit,
       m.suspended, m.deleted, m.status, w.start_limit AS warmup_start, w.days AS warmup_days,
       w.started_on AS warmup_started_on
FROM mailboxes m LEFT JOIN mail_warmup w ON w.mailbox_id = m.id
WHERE m.address = $1 AND NOT m.deleted;

-- name: mail_sender_by_id
-- A live mailbox of the account ($2) with its domain's name, for the token's domain
-- restriction; tombstones (deleted mailboxes or domains) are never found.
SELECT m.id, m.account_id, m.domain_id, m.address, m.name, m.signature, m.daily_send_limit,
       m.suspended, m.deleted, m.status, w.start_limit AS warmup_start, w.days AS warmup_days,
       w.started_on AS warmup_started_on, d.name AS domain_name
FROM mailboxes m
JOIN domains d ON d.id = m.domain_id
LEFT JOIN mail_warmup w ON w.mailbox_id = m.id
WHERE m.id = $1 AND m.account_id = $2 AND NOT m.deleted AND NOT d.deleted
  AND d.account_id = $2;

-- name: mail_sent_on_day
SELECT coalesce((SELECT count FROM mail_send_counts WHERE mailbox_id = $1 AND day = $2), 0);

-- name: mail_count_send
-- One more message for the mailbox today, only while under the limit ($4): no row back
-- means the limit is reached. Atomic, so concurrent submissions cannot overshoot.
INSERT INTO mail_send_counts AS c (mailbox_id, day, domain_id, count)
SELECT $1, $2, $3, 1 WHERE $4 > 0
ON CONFLICT (mailbox_id, day) DO UPDATE SET count = c.count + 1 WHERE c.count < $4
RETURNING count;

-- name: mail_set_daily_limit
UPDATE mailboxes SET daily_send_limit = $3, updated_at = now()
WHERE account_id = $1 AND id = $2 AND NOT deleted
RETURNING id;

-- name: mail_set_warmup
INSERT INTO mail_warmup (mailbox_id, start_limit, days, started_on)
VALUES ($1, $2, $3, $4)
ON CONFLICT (mailbox_id) DO UPDATE
SET start_limit = EXCLUDED.start_limit, days = EXCLUDED.days, started_on = EXCLUDED.started_on;

-- name: mail_clear_warmup
DELETE FROM mail_warmup WHERE mailbox_id = $1;

-- name: mail_watch_recipient
-- The policy service saw this address as a recipient: scan its INBOX for a while.
INSERT INTO mail_scan_state (mailbox_id, watch_until)
SELECT id, now() + make_interval(secs => $2) FROM mailboxes
WHERE address = $1 AND NOT deleted
ON CONFLICT (mailbox_id) DO UPDATE
SET watch_until = greatest(mail_scan_state.watch_until, EXCLUDED.watch_until)
RETURNING mailbox_id;

-- name: mail_sweep_enroll
-- Full sweep: every active mailbox gets a scan row (last_uid -1: take a baseline first,
-- so that old mail is not reported as new).
INSERT INTO mail_scan_state (mailbox_id, last_uid, watch_until)
SELECT m.id, -1, now() + interval '30 seconds'
FROM mailboxes m JOIN domains d ON d.id = m.domain_id
WHERE m.status = 'active' AND NOT m.deleted AND d.mail_host = $1
ON CONFLICT (mailbox_id) DO UPDATE
SET watch_until = greatest(mail_scan_state.watch_until, EXCLUDED.watch_until);

-- name: mail_watched
SELECT s.mailbox_id, s.uidvalidity, s.last_uid, m.address, m.account_id, m.domain_id
FROM mail_scan_state s
JOIN mailboxes m ON m.id = s.mailbox_id
JOIN domains d ON d.id = m.domain_id
WHERE s.watch_until > now() AND m.status = 'active' AND NOT m.deleted AND d.mail_host = $1
  -- Mailboxes whose last scans failed wait out their backoff without taking a slot.
  AND NOT (s.mailbox_id = ANY ($3::text[]))
-- Recipients just seen by the policy service (watched longest) first, sweeps after.
ORDER BY s.watch_until DESC
LIMIT $2;

-- name: mail_scan_record
UPDATE mail_scan_state SET uidvalidity = $2, last_uid = $3, scanned_at = now()
WHERE mailbox_id = $1;

-- name: webhook_insert
INSERT INTO webhooks (id, account_id, url, events, sealed_secret)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, account_id, url, events, created_at;

-- name: webhook_list
SELECT id, account_id, url, events, created_at FROM webhooks
WHERE account_id = $1 ORDER BY created_at, id;

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
SELECT id, event_id, event, state, attempts, last_status, last_error, created_at,
       delivered_at, next_attempt_at
FROM webhook_deliveries WHERE webhook_id = $1
ORDER BY id DESC LIMIT $2;

-- name: jobs_finished_info
SELECT id, account_id, type, status, resource_id, message, completed_at
FROM jobs WHERE id = ANY ($1::text[]);

-- name: mail_sent_expire
DELETE FROM mail_sent_messages WHERE expires_at <= now();
