-- 0003 mailboxes at scale: tombstones for deleted mailboxes (their Maildir is kept in a
-- retention area until purge_after, and the mailbox can be restored until then), and
-- alias domains.

-- A deleted mailbox keeps its row: status 'deleting' until the backend has moved its
-- Maildir away, then 'deleted' until purged. Its address is free again once 'deleted'.
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
