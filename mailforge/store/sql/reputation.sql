-- Sending reputation and its evidence (store/reputation.py): bounces and complaints
-- per domain, and the Message-IDs of the messages mailforge sent, which a report must
-- name to count. Scoped by domain (and mailbox): the callers found them first.

-- name: mail_reputation_record
INSERT INTO mail_reputation_events (domain_id, mailbox_id, kind, ref)
VALUES ($1, $2, $3, $4)
ON CONFLICT (domain_id, ref) DO NOTHING
RETURNING id;

-- name: mail_reputation_counts
-- Domain $1's counts over the last $2 days (one definition: domain_reputation_counts).
SELECT sent, bounces, complaints FROM domain_reputation_counts($1, $2::int);

-- name: mail_sent_record
-- Evidence: a message mailforge sent ($5 days kept). The first record of a Message-ID
-- for a domain stands (a later copy cannot take it over).
INSERT INTO mail_sent_messages (domain_id, message_id, mailbox_id, recipients, expires_at)
VALUES ($1, $2, $3, $4::text[], now() + make_interval(days => $5::int))
ON CONFLICT (domain_id, message_id) DO NOTHING
RETURNING message_id;

-- name: mail_sent_forget
-- The submission was refused: the message never left.
DELETE FROM mail_sent_messages WHERE domain_id = $1 AND message_id = $2;

-- name: mail_submitted_sender
-- For an SMTP submission: the live mailbox of login $1 and the live domain $2 of its
-- own account the From header names.
SELECT m.id AS mailbox_id, d.id AS domain_id
FROM mailboxes m
JOIN domains d ON d.account_id = m.account_id
WHERE m.address = $1 AND NOT m.deleted AND m.kind = 'managed' AND d.name = $2
  AND NOT d.deleted;

-- name: mail_sent_evidence
-- The sent message a report received by mailbox $3 (of domain $2) is about: sent from
-- that domain or by that mailbox, and not expired.
SELECT domain_id, mailbox_id, recipients
FROM mail_sent_messages
WHERE message_id = $1 AND expires_at > now() AND (domain_id = $2 OR mailbox_id = $3)
ORDER BY (domain_id = $2) DESC
LIMIT 1;
