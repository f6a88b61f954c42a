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
