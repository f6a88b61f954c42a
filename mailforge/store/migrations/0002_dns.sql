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
