-- mailforge 0007: idempotency keys survive a crash of the request holding them.
-- A key being handled names its claimant (node:pid:process start, like the engine's
-- lease owners) and a lease, so a claim whose process died is seen at once (same node)
-- or when the lease runs out (another node). The first job the request created is
-- recorded in the job's own transaction, so a retry after the crash answers with that
-- job instead of creating a second one.
ALTER TABLE idempotency_keys
    ADD COLUMN claimant    text,
    ADD COLUMN lease_until timestamptz,
    ADD COLUMN job_id      text;
