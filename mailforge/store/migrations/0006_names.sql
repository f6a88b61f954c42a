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
