-- mailforge 0004: tenancy (reseller accounts with contact fields), audit log.
--
-- Accounts form a tree: the operator's root account (parent_id NULL) and sub-accounts
-- created by resellers. An account whose `reseller` flag is set (or the root) may create
-- sub-accounts. The audit log is append-only: triggers refuse UPDATE, DELETE and TRUNCATE,
-- so what the API recorded cannot be rewritten through the application's role.

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
