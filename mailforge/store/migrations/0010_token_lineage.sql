-- 0010: a token minted by another token remembers it (issue 9, stolen tokens): revoking
-- a token revokes every token it minted, directly or not, and a minted token never
-- outlives the token that minted it (clamped at creation).
ALTER TABLE api_tokens ADD COLUMN parent_id text REFERENCES api_tokens (id) ON DELETE SET NULL;
CREATE INDEX api_tokens_parent_idx ON api_tokens (parent_id) WHERE parent_id IS NOT NULL;
