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
