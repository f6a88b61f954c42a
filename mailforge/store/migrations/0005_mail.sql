-- mailforge 0005: mail through the API: send counts (daily limits, warm-up), inbound
-- scanning state, reputation events, webhooks and their delivery queue.

-- Messages each mailbox sent per UTC day, counted by the Postfix policy service when a
-- message is accepted by submission (API sends go through submission too).
CREATE TABLE mail_send_counts (
    mailbox_id text NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    day        date NOT NULL,
    domain_id  text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    count      integer NOT NULL DEFAULT 0 CHECK (count >= 0),
    PRIMARY KEY (mailbox_id, day)
);
CREATE INDEX mail_send_counts_domain_day_idx ON mail_send_counts (domain_id, day);

-- Optional warm-up schedule of a mailbox (none: the daily limit applies at once).
CREATE TABLE mail_warmup (
    mailbox_id text PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    start_limit integer NOT NULL CHECK (start_limit >= 1),
    days        integer NOT NULL CHECK (days >= 1),
    started_on  date NOT NULL
);

-- Inbound observation: the last INBOX UID seen per mailbox, and until when the mailbox
-- is watched (set when the policy service sees it as a recipient).
CREATE TABLE mail_scan_state (
    mailbox_id  text PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    uidvalidity bigint NOT NULL DEFAULT 0,
    last_uid    bigint NOT NULL DEFAULT 0,
    watch_until timestamptz NOT NULL DEFAULT now(),
    scanned_at  timestamptz
);
CREATE INDEX mail_scan_state_watch_idx ON mail_scan_state (watch_until);

-- Bounces and complaints per domain; ref (mailbox, UIDVALIDITY, UID or a Postfix queue
-- id) makes recording idempotent.
CREATE TABLE mail_reputation_events (
    id          bigserial PRIMARY KEY,
    domain_id   text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    mailbox_id  text REFERENCES mailboxes (id) ON DELETE SET NULL,
    kind        text NOT NULL CHECK (kind IN ('bounce', 'complaint')),
    ref         text NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX mail_reputation_events_ref_key ON mail_reputation_events (domain_id, ref);
CREATE INDEX mail_reputation_events_domain_idx ON mail_reputation_events (domain_id, occurred_at);

CREATE TABLE webhooks (
    id            text PRIMARY KEY,
    account_id    text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    url           text NOT NULL,
    events        text[] NOT NULL,
    -- The signing secret, sealed with the master key.
    sealed_secret bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_account_idx ON webhooks (account_id);

-- Persisted delivery queue: a row per (webhook, event), retried with backoff.
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    webhook_id      text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        text NOT NULL,
    event           text NOT NULL,
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE UNIQUE INDEX webhook_deliveries_event_key ON webhook_deliveries (webhook_id, event_id);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
