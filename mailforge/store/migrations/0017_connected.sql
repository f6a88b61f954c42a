-- 0017 (issue 12): connected mailboxes. A mailbox mailforge did not create, reached on
-- its own provider by SMTP/IMAP credentials, is a row of `mailboxes` too (same usr_ id
-- space, same limits, send counts, warm-up and scan state) with kind 'connected' and no
-- domain: every backend-facing query joins `domains` or filters on `domain_id`, so such
-- a row can never reach Postfix, Dovecot, DKIM or DNS.
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
