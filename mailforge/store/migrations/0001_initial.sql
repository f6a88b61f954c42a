-- mailforge 0001: accounts, tokens, domains, mailboxes, aliases, jobs, idempotency.
--
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
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_account_idx ON api_tokens (account_id);

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
CREATE INDEX jobs_account_created_idx ON jobs (account_id, created_at DESC);
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
    PRIMARY KEY (account_id, key)
);
