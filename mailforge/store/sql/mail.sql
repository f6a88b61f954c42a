-- Mail through the API (issue 6): senders, send counting, warm-up, inbound scanning
-- and reputation evidence (webhooks: webhooks.sql).

-- name: mail_sender_by_address
-- For the policy service (a question of the mail server, not of a tenant): the live
-- mailbox a SASL login acts as, with its warm-up and its count of day $2.
SELECT m.id, m.account_id, m.domain_id, m.address, m.name, m.signature, m.daily_send_limit,
       m.suspended, m.status, w.start_limit AS warmup_start, w.days AS warmup_days,
       w.started_on AS warmup_started_on, d.name AS domain_name,
       coalesce(c.count, 0) AS sent_today, m.kind, NULL::text AS sent_folder,
       false AS save_sent
FROM mailboxes m
JOIN domains d ON d.id = m.domain_id
LEFT JOIN mail_warmup w ON w.mailbox_id = m.id
LEFT JOIN mail_send_counts c ON c.mailbox_id = m.id AND c.day = $2
-- Never a connected mailbox: a local SASL login is never one of theirs.
WHERE m.address = $1 AND NOT m.deleted AND m.kind = 'managed';

-- name: mail_sender_by_id
-- A live mailbox of the account ($2) within the token's domain restriction ($3, NULL:
-- unrestricted), with its domain's name, its warm-up and its count of day $4.
-- Tombstones (deleted mailboxes or domains) are never found. A connected mailbox
-- (issue 12: no domain row) is found too, its domain the address's; it is paused
-- (suspended) while its account is suspended, as the backend's nologin does for the
-- managed ones.
SELECT m.id, m.account_id, m.domain_id, m.address, m.name, m.signature, m.daily_send_limit,
       m.suspended OR (m.kind = 'connected' AND a.status <> 'active') AS suspended,
       m.status, w.start_limit AS warmup_start, w.days AS warmup_days,
       w.started_on AS warmup_started_on,
       coalesce(d.name, split_part(m.address, '@', 2)) AS domain_name,
       coalesce(c.count, 0) AS sent_today, m.kind, k.sent_folder,
       coalesce(k.save_sent, false) AS save_sent
FROM mailboxes m
JOIN accounts a ON a.id = m.account_id
LEFT JOIN domains d ON d.id = m.domain_id AND d.account_id = m.account_id
LEFT JOIN mailbox_connections k ON k.mailbox_id = m.id
LEFT JOIN mail_warmup w ON w.mailbox_id = m.id
LEFT JOIN mail_send_counts c ON c.mailbox_id = m.id AND c.day = $4
WHERE m.id = $1 AND m.account_id = $2 AND NOT m.deleted
  AND (CASE WHEN m.kind = 'managed' THEN d.id IS NOT NULL AND NOT d.deleted
            ELSE k.mailbox_id IS NOT NULL END)
  AND ($3::text[] IS NULL
       OR coalesce(d.name, split_part(m.address, '@', 2)) = ANY ($3::text[]));

-- name: mail_sent_on_day
-- Messages mailbox $1 of account $3 sent on day $2.
SELECT coalesce((SELECT c.count FROM mail_send_counts c
                 JOIN mailboxes m ON m.id = c.mailbox_id
                 WHERE c.mailbox_id = $1 AND c.day = $2 AND m.account_id = $3), 0);

-- name: mail_count_send
-- One more message for the mailbox today, only while under the limit ($4): no row back
-- means the limit is reached. Atomic, so concurrent submissions cannot overshoot.
INSERT INTO mail_send_counts AS c (mailbox_id, day, domain_id, count)
SELECT $1, $2, $3, 1 WHERE $4 > 0
ON CONFLICT (mailbox_id, day) DO UPDATE SET count = c.count + 1 WHERE c.count < $4
RETURNING count;

-- name: mail_lock_sender
-- The live mailbox $2 of account $1 within the domain restriction ($3), locked while
-- its sending settings change (a connected one too: its domain is its address's).
SELECT m.id FROM mailboxes m
LEFT JOIN domains d ON d.id = m.domain_id AND d.account_id = m.account_id
WHERE m.account_id = $1 AND m.id = $2 AND NOT m.deleted
  AND (m.kind = 'connected' OR (d.id IS NOT NULL AND NOT d.deleted))
  AND ($3::text[] IS NULL
       OR coalesce(d.name, split_part(m.address, '@', 2)) = ANY ($3::text[]))
FOR UPDATE OF m;

-- name: mail_set_daily_limit
UPDATE mailboxes m SET daily_send_limit = $3, updated_at = now()
WHERE m.account_id = $1 AND m.id = $2 AND NOT m.deleted
  AND ($4::text[] IS NULL
       OR coalesce((SELECT d.name FROM domains d WHERE d.id = m.domain_id),
                   split_part(m.address, '@', 2)) = ANY ($4::text[]))
RETURNING m.id;

-- name: mail_set_warmup
INSERT INTO mail_warmup (mailbox_id, start_limit, days, started_on)
SELECT m.id, $3, $4, $5 FROM mailboxes m LEFT JOIN domains d ON d.id = m.domain_id
WHERE m.account_id = $1 AND m.id = $2 AND NOT m.deleted
  AND ($6::text[] IS NULL
       OR coalesce(d.name, split_part(m.address, '@', 2)) = ANY ($6::text[]))
ON CONFLICT (mailbox_id) DO UPDATE
SET start_limit = EXCLUDED.start_limit, days = EXCLUDED.days, started_on = EXCLUDED.started_on
RETURNING mailbox_id;

-- name: mail_clear_warmup
DELETE FROM mail_warmup w
USING mailboxes m LEFT JOIN domains d ON d.id = m.domain_id
WHERE w.mailbox_id = m.id AND m.account_id = $1 AND m.id = $2
  AND ($3::text[] IS NULL
       OR coalesce(d.name, split_part(m.address, '@', 2)) = ANY ($3::text[]));

-- name: mail_watch_recipient
-- The policy service saw this address as a recipient: scan its INBOX for a while.
INSERT INTO mail_scan_state (mailbox_id, watch_until)
SELECT id, now() + make_interval(secs => $2) FROM mailboxes
WHERE address = $1 AND NOT deleted AND kind = 'managed'
ON CONFLICT (mailbox_id) DO UPDATE
SET watch_until = greatest(mail_scan_state.watch_until, EXCLUDED.watch_until)
RETURNING mailbox_id;

-- name: mail_scan_by_address
-- Mailboxes of this mail host ($1) Dovecot reported deliveries to ($2: addresses), with
-- where their last scan stopped. A mailbox never scanned starts at UID 0: all of its
-- mail arrived after mailforge created it, so all of it is news.
SELECT m.id AS mailbox_id, coalesce(s.uidvalidity, 0) AS uidvalidity,
       coalesce(s.last_uid, 0) AS last_uid, m.address, m.account_id, m.domain_id
FROM mailboxes m
JOIN domains d ON d.id = m.domain_id
LEFT JOIN mail_scan_state s ON s.mailbox_id = m.id
WHERE m.address = ANY ($2::text[]) AND m.status = 'active' AND NOT m.deleted
  AND d.mail_host = $1;

-- name: mail_sweep_page
-- The safety-net sweep walks the active mailboxes of this host ($1) in id order, a
-- page ($3) after the id $2 at a time (keyset: each page is an index range, whatever
-- the size of the table). A mailbox never scanned takes a baseline first (last_uid
-- -1): what is in it already is not reported as new.
SELECT m.id AS mailbox_id, coalesce(s.uidvalidity, 0) AS uidvalidity,
       coalesce(s.last_uid, -1) AS last_uid, m.address, m.account_id, m.domain_id
FROM mailboxes m
JOIN domains d ON d.id = m.domain_id
LEFT JOIN mail_scan_state s ON s.mailbox_id = m.id
WHERE m.id > $2 AND m.status = 'active' AND NOT m.deleted AND d.mail_host = $1
ORDER BY m.id
LIMIT $3;

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
-- Where a scan stopped; a mailbox scanned for the first time gets its row here.
INSERT INTO mail_scan_state (mailbox_id, uidvalidity, last_uid, scanned_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (mailbox_id) DO UPDATE
SET uidvalidity = EXCLUDED.uidvalidity, last_uid = EXCLUDED.last_uid,
    scanned_at = EXCLUDED.scanned_at;


-- name: mail_uncount_send
-- One message back off the count (a send refused after it was counted).
UPDATE mail_send_counts SET count = count - 1
WHERE mailbox_id = $1 AND day = $2 AND count > 0;

-- name: mail_connected_page
-- The active connected mailboxes after id $1, $2 at a time (keyset), for the inbound
-- poll of connected mailboxes (their provider sends mailforge no delivery events). A
-- mailbox never scanned takes a baseline first (last_uid -1).
SELECT m.id AS mailbox_id, coalesce(s.uidvalidity, 0) AS uidvalidity,
       coalesce(s.last_uid, -1) AS last_uid, m.address, m.account_id, m.domain_id
FROM mailboxes m
LEFT JOIN mail_scan_state s ON s.mailbox_id = m.id
WHERE m.id > $1 AND m.kind = 'connected' AND m.status = 'active' AND NOT m.deleted
ORDER BY m.id
LIMIT $2;

-- name: mail_sent_expire
DELETE FROM mail_sent_messages WHERE expires_at <= now();
