-- 0014 (issue 11): the cost of a pass follows the change, not the size of the domain.
-- `applied_generation` is the domain generation the mail backend last applied whole;
-- while it equals `generation`, a pass hands the backend only the mailboxes and aliases
-- that lag (a delta, DomainState.complete = False), even while a domain step (DNS
-- verification) still retries. It can run ahead of `observed_generation`, which also
-- waits for the domain steps. Set to 0 to ask for a complete pass (a backend resync).
ALTER TABLE domains ADD COLUMN applied_generation bigint NOT NULL DEFAULT 0;
-- Domains converged before: the backend holds what their observed generation says.
UPDATE domains SET applied_generation = observed_generation;
