-- mailforge declared schema: what applying every migration in order must produce.
-- Kept by hand beside the migrations; tests/integration/test_schema.py compares them.
-- Desired objects (domains, mailboxes, aliases) carry `generation` (bumped by every
-- change of intent) and `observed_generation` (the generation the backend was last
-- converged to), plus `last_error`. "Not yet converged" is
-- `observed_generation < generation`, served by partial indexes.

CREATE TABLE accounts (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    email            text,
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'suspended', 'deleting')),
    parent_id        text REFERENCES accounts (id),
    domain_limit     integer NOT NULL CHECK (domain_limit >= 0),
    email_user_limit integer NOT NULL CHECK (email_user_limit >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_parent_idx ON accounts (parent_id);

CREATE TABLE api_tokens (
    id           text PRIMARY KEY,
    account_id   text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name         text NOT NULL,
    secret_hash  bytea NOT NULL,
    permissions  text[] NOT NULL,
    domains      text[],
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    -- The token that minted this one (0010): revoked with it, never outliving it.
    parent_id    text REFERENCES api_tokens (id) ON DELETE SET NULL
);
CREATE INDEX api_tokens_account_idx ON api_tokens (account_id);
CREATE INDEX api_tokens_parent_idx ON api_tokens (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE domains (
    id                  text PRIMARY KEY,
    account_id          text NOT NULL REFERENCES accounts (id),
    name                text NOT NULL,
    unicode_name        text NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'provisioning', 'active', 'failed',
                                          'deleting')),
    -- The mail host whose agent converges this domain (several hosts, one database).
    mail_host           text NOT NULL,
    dns_provider        text NOT NULL DEFAULT 'manual',
    -- Desired: serve mail for this domain on the backend (set by setup).
    backend_enabled     boolean NOT NULL DEFAULT false,
    deleted             boolean NOT NULL DEFAULT false,
    generation          bigint NOT NULL DEFAULT 1,
    observed_generation bigint NOT NULL DEFAULT 0,
    last_error          text,
    -- Reconcile bookkeeping: the domain is the unit a worker claims.
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_owner         text,
    lease_until         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX domains_name_key ON domains (name);
CREATE INDEX domains_account_idx ON domains (account_id);
CREATE INDEX domains_unconverged_idx ON domains (mail_host)
    WHERE observed_generation < generation;

CREATE TABLE mailboxes (
    id                  text PRIMARY KEY,
    account_id          text NOT NULL REFERENCES accounts (id),
    domain_id           text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    local_part          text NOT NULL,
    address             text NOT NULL,
    name                text NOT NULL DEFAULT '',
    password_hash       text NOT NULL,
    quota_mb            integer NOT NULL CHECK (quota_mb > 0),
    daily_send_limit    integer CHECK (daily_send_limit >= 0),
    signature           text NOT NULL DEFAULT '',
    -- Desired state.
    suspended           boolean NOT NULL DEFAULT false,
    deleted             boolean NOT NULL DEFAULT false,
    -- Observed state, written by workers.
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'active', 'suspended', 'deleting',
                                          'failed')),
    generation          bigint NOT NULL DEFAULT 1,
    observed_generation bigint NOT NULL DEFAULT 0,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX mailboxes_address_key ON mailboxes (address);
CREATE INDEX mailboxes_domain_idx ON mailboxes (domain_id);
CREATE INDEX mailboxes_account_created_idx ON mailboxes (account_id, created_at, id);
CREATE INDEX mailboxes_unconverged_idx ON mailboxes (domain_id)
    WHERE observed_generation < generation;

CREATE TABLE aliases (
    id                  text PRIMARY KEY,
    account_id          text NOT NULL REFERENCES accounts (id),
    domain_id           text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    -- 'local@domain', or '@domain' for a catch-all.
    address             text NOT NULL,
    targets             text[] NOT NULL CHECK (cardinality(targets) > 0),
    deleted             boolean NOT NULL DEFAULT false,
    generation          bigint NOT NULL DEFAULT 1,
    observed_generation bigint NOT NULL DEFAULT 0,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX aliases_address_key ON aliases (address);
CREATE INDEX aliases_domain_idx ON aliases (domain_id);
CREATE INDEX aliases_unconverged_idx ON aliases (domain_id)
    WHERE observed_generation < generation;

CREATE TABLE jobs (
    id           text PRIMARY KEY,
    account_id   text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    type         text NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    progress     integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    message      text NOT NULL DEFAULT '',
    resource_id  text,
    total        integer NOT NULL DEFAULT 0,
    done         integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    result       jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- One-time secrets (generated passwords) sealed with the master key, erased at expiry.
    sealed_secrets bytea,
    secrets_expire_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
-- 0016: the id too, for keyset paging of GET /v1/jobs.
CREATE INDEX jobs_account_created_id_idx ON jobs (account_id, created_at DESC, id DESC);
CREATE INDEX jobs_open_idx ON jobs (status) WHERE status IN ('pending', 'processing');
CREATE INDEX jobs_secrets_expiry_idx ON jobs (secrets_expire_at)
    WHERE secrets_expire_at IS NOT NULL;

-- What a job waits for: each object reaching a generation (or being gone, for deletes).
CREATE TABLE job_items (
    job_id            text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq               integer NOT NULL,
    object_kind       text NOT NULL CHECK (object_kind IN ('domain', 'mailbox', 'alias')),
    object_id         text NOT NULL,
    target_generation bigint NOT NULL,
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'done', 'failed')),
    error             text,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_items_pending_object_idx ON job_items (object_id) WHERE state = 'pending';

CREATE TABLE idempotency_keys (
    account_id   text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    status       integer NOT NULL,
    -- The first answer, sealed: it may hold a generated password. NULL while the first
    -- request is still being handled (status 0).
    sealed_body  bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- 0007: while status is 0, who handles the request (node:pid:process start) and
    -- until when; the first job it created (written in the job's transaction), so a
    -- retry after a crash answers with that job.
    claimant     text,
    lease_until  timestamptz,
    job_id       text,
    PRIMARY KEY (account_id, key)
);

-- 0003 mailboxes at scale: tombstones for deleted mailboxes (their Maildir is kept in a
-- retention area until purge_after, and the mailbox can be restored until then), and
-- alias domains. A deleted mailbox keeps its row: status 'deleting' until the backend
-- has moved its Maildir away, then 'deleted' until purged; its address is free again
-- once 'deleted'.
ALTER TABLE mailboxes ADD COLUMN deleted_at timestamptz;
ALTER TABLE mailboxes ADD COLUMN purge_after timestamptz;
ALTER TABLE mailboxes DROP CONSTRAINT mailboxes_status_check;
ALTER TABLE mailboxes ADD CONSTRAINT mailboxes_status_check
    CHECK (status IN ('pending', 'active', 'suspended', 'deleting', 'deleted', 'failed'));
DROP INDEX mailboxes_address_key;
CREATE UNIQUE INDEX mailboxes_address_key ON mailboxes (address) WHERE NOT deleted;
CREATE INDEX mailboxes_address_idx ON mailboxes (address);
CREATE INDEX mailboxes_purge_idx ON mailboxes (purge_after) WHERE deleted;
-- An alias domain: mail to any mailbox name at this domain goes to the same name at
-- alias_of (and those mailboxes may send as it).
ALTER TABLE domains ADD COLUMN alias_of text REFERENCES domains (id) ON DELETE SET NULL;
CREATE INDEX domains_alias_of_idx ON domains (alias_of) WHERE alias_of IS NOT NULL;
-- ---- 0004_tenancy

ALTER TABLE accounts
    ADD COLUMN reseller     boolean NOT NULL DEFAULT false,
    ADD COLUMN first_name   text NOT NULL DEFAULT '',
    ADD COLUMN last_name    text NOT NULL DEFAULT '',
    ADD COLUMN company_name text NOT NULL DEFAULT '';

CREATE TABLE audit_log (
    seq              bigserial PRIMARY KEY,
    id               text NOT NULL UNIQUE,
    at               timestamptz NOT NULL DEFAULT now(),
    -- The account acted on, and (when a parent acted for it) the account of the token.
    -- No foreign keys: the record outlives a deleted account or token.
    account_id       text NOT NULL,
    actor_account_id text NOT NULL,
    token_id         text NOT NULL,
    action           text NOT NULL,
    method           text NOT NULL,
    route            text NOT NULL,
    resource_id      text,
    status           integer NOT NULL,
    client_addr      text,
    request_id       text,
    summary          jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_account_seq_idx ON audit_log (account_id, seq DESC);

CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
-- mailforge 0002: DKIM keys with a lifecycle, DNS records mailforge owns, and the
-- per-domain DNS bookkeeping (verification result, time-based re-visits, options).

-- One row per DKIM key. The private key is sealed with the master key (secretbox);
-- the clear key exists only in the signer's key files.
CREATE TABLE dkim_keys (
    id               text PRIMARY KEY,
    domain_id        text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    algorithm        text NOT NULL CHECK (algorithm IN ('rsa', 'ed25519')),
    selector         text NOT NULL,
    public_key       text NOT NULL,
    sealed_private   bytea NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'published', 'active', 'retiring',
                                      'revoked')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    state_changed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (domain_id, selector)
);
CREATE INDEX dkim_keys_domain_idx ON dkim_keys (domain_id);

-- The records mailforge created (name, type, value). Anything else in a zone is the
-- operator's and is never changed or deleted.
CREATE TABLE dns_owned_records (
    domain_id   text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    name        text NOT NULL,
    rtype       text NOT NULL,
    content     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain_id, name, rtype, content)
);

ALTER TABLE domains
    -- Last verification report (records expected vs found) and when it ran.
    ADD COLUMN dns_report jsonb,
    ADD COLUMN dns_checked_at timestamptz,
    -- When a time-based DKIM transition (rotation, retirement) falls due; a periodic
    -- requeue bumps the domain's generation once it has passed.
    ADD COLUMN dns_revisit_at timestamptz,
    -- Operator's choices: overwrite conflicting SPF/DMARC, apply large plans anyway.
    ADD COLUMN dns_overwrite boolean NOT NULL DEFAULT false,
    ADD COLUMN dns_force boolean NOT NULL DEFAULT false,
    -- Provider credentials given at connect (e.g. a Cloudflare token), sealed.
    ADD COLUMN dns_credentials bytea;
CREATE INDEX domains_dns_revisit_idx ON domains (dns_revisit_at)
    WHERE dns_revisit_at IS NOT NULL;
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

-- Bounces and complaints per domain; ref makes recording idempotent (since 0008:
-- 'complaint:<Message-ID>' or 'bounce:<Message-ID>[:<recipient>]' of the sent message).
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

-- Evidence for reputation (0008): Message-IDs of the messages mailforge sent; a DSN or
-- ARF report counts only when it is about one of them.
CREATE TABLE mail_sent_messages (
    domain_id   text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    -- The Message-ID without its angle brackets.
    message_id  text NOT NULL CHECK (length(message_id) BETWEEN 1 AND 250),
    mailbox_id  text REFERENCES mailboxes (id) ON DELETE SET NULL,
    -- Envelope recipients in lower case; NULL when not known (then a bounce counts once
    -- per message, whatever recipient it names).
    recipients  text[],
    sent_at     timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (domain_id, message_id)
);
CREATE INDEX mail_sent_messages_message_idx ON mail_sent_messages (message_id);
CREATE INDEX mail_sent_messages_expires_idx ON mail_sent_messages (expires_at);

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
-- ---- 0006_names
-- mailforge 0006: ownership and canonical form of names (issue 9).

-- Connecting a domain looks for connected names under it: reverse(name) starts with
-- reverse('.' || new name), a byte-wise range (text_pattern_ops) on this index.
CREATE INDEX domains_name_reversed_idx ON domains (reverse(name) text_pattern_ops);

-- Defence in depth behind mailforge.validation: a name that reaches a Postfix map or a
-- path is lowercase ASCII letters, digits and . _ - only (PostgreSQL's \A and \Z anchor
-- at the ends of the whole string). NOT VALID: rows stored before this migration are
-- not re-checked here (a bad one must be repaired, then VALIDATE CONSTRAINT); every new
-- or changed row is.
ALTER TABLE domains ADD CONSTRAINT domains_name_canonical
    CHECK (name ~ '\A[a-z0-9][a-z0-9.-]{0,251}[a-z0-9]\Z') NOT VALID;
ALTER TABLE mailboxes ADD CONSTRAINT mailboxes_address_canonical
    CHECK (local_part ~ '\A[a-z0-9._-]{1,64}\Z'
           AND address ~ '\A[a-z0-9._-]{1,64}@[a-z0-9.-]{1,253}\Z') NOT VALID;
ALTER TABLE aliases ADD CONSTRAINT aliases_address_canonical
    CHECK (address ~ '\A[a-z0-9._-]{0,64}@[a-z0-9.-]{1,253}\Z'
           AND array_to_string(targets, ',') ~ '\A[a-z0-9._@,-]+\Z') NOT VALID;
-- ---- 0009_domain_ownership
-- mailforge 0009: a name is proven (its public delegation points at its provider's
-- nameservers) before it is in any Postfix map, Dovecot row or DKIM signing table.
-- Set once, never cleared.
ALTER TABLE domains ADD COLUMN ownership_verified_at timestamptz;

-- ---- 0011_auth_notify
-- 0011: API processes cache token lookups for a few seconds (store/tokencache.py). Every
-- change that can make a cached lookup wrong notifies them on channel mailforge_auth,
-- from a trigger, so it happens in the changing transaction itself (delivered at its
-- commit) whichever code makes the change: a token revoked, re-scoped or deleted, an
-- account suspended, resumed, moved or deleted. Touching last_used_at notifies nothing.
CREATE FUNCTION auth_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify('mailforge_auth', '*');
    ELSIF TG_TABLE_NAME = 'api_tokens' THEN
        PERFORM pg_notify('mailforge_auth', 'tok ' || OLD.id);
    ELSE
        PERFORM pg_notify('mailforge_auth', 'acct ' || OLD.id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_tokens_auth_updated AFTER UPDATE ON api_tokens
    FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'last_used_at') IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at'))
    EXECUTE FUNCTION auth_changed();
CREATE TRIGGER api_tokens_auth_deleted AFTER DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION auth_changed();
CREATE TRIGGER api_tokens_auth_truncated AFTER TRUNCATE ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION auth_changed();
CREATE TRIGGER accounts_auth_updated AFTER UPDATE ON accounts
    FOR EACH ROW
    WHEN ((OLD.status, OLD.reseller, OLD.parent_id)
          IS DISTINCT FROM (NEW.status, NEW.reseller, NEW.parent_id))
    EXECUTE FUNCTION auth_changed();
CREATE TRIGGER accounts_auth_deleted AFTER DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION auth_changed();
CREATE TRIGGER accounts_auth_truncated AFTER TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION auth_changed();

-- The total of a mailbox list without filters (the common case) in constant time: the
-- count(*) it replaces read every mailbox of the account on each page (12 ms at 10,000,
-- 54 ms at 50,000). Statement triggers append one row per (account, status) whose
-- count a write changed; nothing is ever updated in place, so writers never wait for
-- one another here. A reader sums an account's rows (few); fold_mailbox_counts merges
-- them when they pile up (from the list itself and from the daemon, every minute).
CREATE TABLE mailbox_counts (
    account_id text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    status     text NOT NULL,
    n          bigint NOT NULL
);
CREATE INDEX mailbox_counts_account_idx ON mailbox_counts (account_id);

CREATE FUNCTION mailbox_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO mailbox_counts (account_id, status, n)
        SELECT account_id, status, count(*) FROM new_rows GROUP BY 1, 2;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO mailbox_counts (account_id, status, n)
        SELECT account_id, status, -count(*) FROM old_rows GROUP BY 1, 2;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO mailbox_counts (account_id, status, n)
        SELECT account_id, status, sum(d) FROM (
            SELECT account_id, status, -1 AS d FROM old_rows
            UNION ALL
            SELECT account_id, status, 1 FROM new_rows) c
        GROUP BY 1, 2 HAVING sum(d) <> 0;
    ELSE
        DELETE FROM mailbox_counts;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER mailboxes_count_inserted AFTER INSERT ON mailboxes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_counts_apply();
CREATE TRIGGER mailboxes_count_updated AFTER UPDATE ON mailboxes
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_counts_apply();
CREATE TRIGGER mailboxes_count_deleted AFTER DELETE ON mailboxes
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_counts_apply();
CREATE TRIGGER mailboxes_count_truncated AFTER TRUNCATE ON mailboxes
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_counts_apply();

-- Existing mailboxes, counted with writers held off so none is missed or counted twice.
LOCK TABLE mailboxes IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO mailbox_counts (account_id, status, n)
SELECT account_id, status, count(*) FROM mailboxes GROUP BY 1, 2;

-- ---- 0012_pending_passwords
-- 0012 (issue 11): passwords hashed by the worker, not in the request; mailbox limits
-- checked without serialising an account's creations on its row.

-- A new password waiting to be hashed, sealed with the master key (secretbox, context
-- 'mailbox-password:<id>'). The request stores it and answers; the reconcile pass
-- hashes it (a process pool on every core) before the backend applies, writes the hash
-- and wipes this in one compare-and-set (pending_passwords.py). Until then a new
-- mailbox's password_hash is '' and a changed one keeps its old hash: the backend is
-- never handed a mailbox whose hash is not made yet.
ALTER TABLE mailboxes ADD COLUMN pending_password bytea;
CREATE INDEX mailboxes_pending_password_idx ON mailboxes (domain_id)
    WHERE pending_password IS NOT NULL;

-- Live (not deleted) mailboxes per account, kept by statement triggers whichever code
-- writes mailboxes, and the account's email_user_limit enforced there: an insert or a
-- restore that would take an account past its limit fails with SQLSTATE MF403 (DETAIL:
-- used before, limit, requested, as JSON). The row of an account is locked from the
-- writing statement to the commit, so concurrent creations of one account wait for one
-- another only that long (not for a lock held across the whole request), and the limit
-- is exact: the check and the increment are one statement.
CREATE TABLE mailbox_usage (
    account_id text PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    used       bigint NOT NULL
);

CREATE FUNCTION mailbox_usage_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    accts  text[];
    deltas bigint[];
    over   record;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM mailbox_usage;
        RETURN NULL;
    END IF;
    -- The change of live mailboxes per account made by this statement.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(account_id ORDER BY account_id), array_agg(n ORDER BY account_id)
        INTO accts, deltas
        FROM (SELECT account_id, count(*) AS n FROM new_rows WHERE NOT deleted
              GROUP BY 1) c;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(account_id ORDER BY account_id), array_agg(n ORDER BY account_id)
        INTO accts, deltas
        FROM (SELECT account_id, -count(*) AS n FROM old_rows WHERE NOT deleted
              GROUP BY 1) c;
    ELSE
        SELECT array_agg(account_id ORDER BY account_id), array_agg(n ORDER BY account_id)
        INTO accts, deltas
        FROM (SELECT account_id, sum(d) AS n FROM (
                  SELECT account_id, -1 AS d FROM old_rows WHERE NOT deleted
                  UNION ALL
                  SELECT account_id, 1 FROM new_rows WHERE NOT deleted) x
              GROUP BY 1 HAVING sum(d) <> 0) c;
    END IF;
    IF accts IS NULL THEN
        RETURN NULL;
    END IF;
    -- Accounts in id order, so two statements never wait for each other in a cycle.
    WITH up AS (
        INSERT INTO mailbox_usage AS u (account_id, used)
        SELECT * FROM unnest(accts, deltas) ORDER BY 1
        ON CONFLICT (account_id) DO UPDATE SET used = u.used + EXCLUDED.used
        RETURNING u.account_id, u.used
    )
    SELECT up.account_id, up.used, x.d, a.email_user_limit AS lim INTO over
    FROM up JOIN unnest(accts, deltas) AS x(account_id, d) USING (account_id)
         JOIN accounts a ON a.id = up.account_id
    WHERE x.d > 0 AND up.used > a.email_user_limit
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'mailbox limit of account % exceeded', over.account_id
            USING ERRCODE = 'MF403',
                  DETAIL = json_build_object('used', over.used - over.d,
                                             'limit', over.lim,
                                             'requested', over.d)::text;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER mailboxes_usage_inserted AFTER INSERT ON mailboxes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_usage_apply();
CREATE TRIGGER mailboxes_usage_updated AFTER UPDATE ON mailboxes
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_usage_apply();
CREATE TRIGGER mailboxes_usage_deleted AFTER DELETE ON mailboxes
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_usage_apply();
CREATE TRIGGER mailboxes_usage_truncated AFTER TRUNCATE ON mailboxes
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_usage_apply();

-- Existing mailboxes, counted with writers held off so none is missed or counted twice.
LOCK TABLE mailboxes IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO mailbox_usage (account_id, used)
SELECT account_id, count(*) FROM mailboxes WHERE NOT deleted GROUP BY 1;

-- ---- 0013_domain_intent
-- 0013 (issue 10): a DKIM rotation is recorded as intent, its keys made by the worker;
-- domain lists page by keyset; one definition of the reputation window's counts.

-- When a rotation was asked for and not yet carried out: the DNS step makes the new
-- keys and clears it (compare-and-set on this value, so a newer request stays).
ALTER TABLE domains ADD COLUMN dkim_rotate_requested_at timestamptz;

-- GET /v1/domains pages by (created_at, id) within the account; the index replaces
-- the account-only one (its prefix serves the same lookups).
CREATE INDEX domains_account_created_idx ON domains (account_id, created_at, id);
DROP INDEX domains_account_idx;

-- Sent messages, bounces and complaints of a domain over the last p_days days: the
-- reputation guard, the domain resource and the domain list all count with this.
CREATE FUNCTION domain_reputation_counts(p_domain text, p_days integer)
RETURNS TABLE (sent bigint, bounces bigint, complaints bigint)
LANGUAGE sql STABLE AS $$
SELECT
  (SELECT coalesce(sum(c.count), 0)::bigint FROM mail_send_counts c
   WHERE c.domain_id = p_domain AND c.day > current_date - p_days),
  (SELECT count(*) FROM mail_reputation_events e
   WHERE e.domain_id = p_domain AND e.kind = 'bounce'
     AND e.occurred_at > now() - make_interval(days => p_days)),
  (SELECT count(*) FROM mail_reputation_events e
   WHERE e.domain_id = p_domain AND e.kind = 'complaint'
     AND e.occurred_at > now() - make_interval(days => p_days))
$$;

-- ---- 0014_applied_generation
-- The domain generation the mail backend last applied whole (complete): while it equals
-- `generation`, passes hand the backend deltas (only the lagging mailboxes and aliases).
-- It can run ahead of `observed_generation`, which also waits for the domain steps.
ALTER TABLE domains ADD COLUMN applied_generation bigint NOT NULL DEFAULT 0;

-- ---- 0017_connected
ALTER TABLE mailboxes ADD COLUMN kind text NOT NULL DEFAULT 'managed'
    CONSTRAINT mailboxes_kind_check CHECK (kind IN ('managed', 'connected'));
ALTER TABLE mailboxes ALTER COLUMN domain_id DROP NOT NULL;
ALTER TABLE mailboxes ADD CONSTRAINT mailboxes_kind_domain_check
    CHECK ((kind = 'managed') = (domain_id IS NOT NULL));
-- A connected mailbox has no quota here (its provider keeps the mail).
ALTER TABLE mailboxes DROP CONSTRAINT mailboxes_quota_mb_check;
ALTER TABLE mailboxes ADD CONSTRAINT mailboxes_quota_mb_check
    CHECK (quota_mb > 0 OR kind = 'connected');
ALTER TABLE mailboxes DROP CONSTRAINT mailboxes_status_check;
ALTER TABLE mailboxes ADD CONSTRAINT mailboxes_status_check
    CHECK (status IN ('pending', 'active', 'suspended', 'deleting', 'deleted', 'failed',
                      'connecting'));
-- A managed address is unique on the host (the mail server delivers to it); a connected
-- one only within its account: two accounts may both connect one Gmail address, and
-- neither learns that the other did. Within an account an address exists once.
DROP INDEX mailboxes_address_key;
CREATE UNIQUE INDEX mailboxes_address_key ON mailboxes (address)
    WHERE NOT deleted AND kind = 'managed';
CREATE UNIQUE INDEX mailboxes_account_address_key ON mailboxes (account_id, address)
    WHERE NOT deleted;

-- Sends of a connected mailbox are counted by mailforge too (no domain row).
ALTER TABLE mail_send_counts ALTER COLUMN domain_id DROP NOT NULL;

-- Where and as whom a connected mailbox is reached, its secrets sealed with the master
-- key (secretbox contexts connected-smtp:/imap:/refresh:/access:/client:<mailbox id>,
-- so a blob copied to another row does not open), and the state of its connection test
-- (test_generation bumped by every change of settings or credentials; the worker
-- records a result only for the generation it tested: compare-and-set).
CREATE TABLE mailbox_connections (
    mailbox_id                 text PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    smtp_host                  text NOT NULL,
    smtp_port                  integer NOT NULL CHECK (smtp_port BETWEEN 1 AND 65535),
    smtp_security              text NOT NULL
                               CHECK (smtp_security IN ('tls', 'starttls', 'none')),
    smtp_username              text NOT NULL,
    imap_host                  text NOT NULL,
    imap_port                  integer NOT NULL CHECK (imap_port BETWEEN 1 AND 65535),
    imap_security              text NOT NULL
                               CHECK (imap_security IN ('tls', 'starttls', 'none')),
    imap_username              text NOT NULL,
    auth                       text NOT NULL CHECK (auth IN ('password', 'xoauth2')),
    sealed_smtp_password       bytea,
    -- NULL: the SMTP password is reused for IMAP.
    sealed_imap_password       bytea,
    oauth_token_url            text,
    oauth_client_id            text,
    sealed_oauth_client_secret bytea,
    sealed_refresh_token       bytea,
    sealed_access_token        bytea,
    access_expires_at          timestamptz,
    save_sent                  boolean NOT NULL DEFAULT true,
    tags                       text[] NOT NULL DEFAULT '{}',
    -- Found by SPECIAL-USE (\Sent) at the last successful test.
    sent_folder                text,
    test_generation            bigint NOT NULL DEFAULT 1,
    tested_generation          bigint NOT NULL DEFAULT 0,
    test_status                text NOT NULL DEFAULT 'pending'
                               CHECK (test_status IN ('pending', 'ok', 'failed')),
    reason                     text,
    detail                     text,
    tested_at                  timestamptz,
    next_test_at               timestamptz NOT NULL DEFAULT now(),
    failures                   integer NOT NULL DEFAULT 0,
    lease_owner                text,
    lease_until                timestamptz,
    dns_check                  jsonb,
    dns_checked_at             timestamptz,
    CHECK (auth = 'xoauth2' OR sealed_smtp_password IS NOT NULL),
    CHECK (auth = 'password' OR (sealed_refresh_token IS NOT NULL
                                 AND oauth_token_url IS NOT NULL
                                 AND oauth_client_id IS NOT NULL))
);
-- The worker's two questions: whose test is due, whose DNS check is due.
CREATE INDEX mailbox_connections_test_due_idx ON mailbox_connections (next_test_at);
CREATE INDEX mailbox_connections_dns_due_idx ON mailbox_connections (dns_checked_at);

-- Whether job p_job is about connected mailboxes at domains in p_domains only (a
-- domain-restricted token sees the jobs of its connect requests; connected mailboxes
-- have no domain row for the domain-based checks to find).
CREATE FUNCTION connected_job_in_domains(p_job text, p_domains text[]) RETURNS boolean
LANGUAGE sql STABLE AS $$
SELECT EXISTS (SELECT 1 FROM job_items ji JOIN mailboxes m ON m.id = ji.object_id
               WHERE ji.job_id = p_job AND m.kind = 'connected')
   AND NOT EXISTS (SELECT 1 FROM job_items ji JOIN mailboxes m ON m.id = ji.object_id
                   WHERE ji.job_id = p_job
                     AND (m.kind <> 'connected'
                          OR NOT split_part(m.address, '@', 2) = ANY (p_domains)))
$$;
