-- A rollout's revision and the token of its last writer (bmsgate.fleet.server.rollouts.store): every change
-- of a rollout or of its members raises the revision, checked against the revision the change was decided
-- on, so writers in several server processes cannot overwrite each other (docs/fleet/rollouts.md,
-- "Several server processes"). The token (random, one per write) lets the rest of that write's
-- transaction apply only when its own revision check won.
-- depends: 0002_rollouts

ALTER TABLE rollouts ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN write_token TEXT;
