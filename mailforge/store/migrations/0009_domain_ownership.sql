-- mailforge 0009: a domain name is proven before it receives mail (issue 9).
-- ownership_verified_at: when the name's public delegation (NS records seen through
-- dns.ns_resolver) was first found to point at its provider's nameservers. Until then
-- the domain is in no Postfix map, no Dovecot row and no DKIM signing table: a tenant
-- cannot receive other tenants' mail for a name it merely typed in. Once set it stays.
ALTER TABLE domains ADD COLUMN ownership_verified_at timestamptz;

-- Domains already served before this migration keep being served (they were set up
-- and converged under the previous rules); an operator can re-check them with
-- POST /v1/domains/check-ns. Everything else proves its delegation first.
UPDATE domains SET ownership_verified_at = now()
WHERE backend_enabled AND NOT deleted AND status = 'active';
