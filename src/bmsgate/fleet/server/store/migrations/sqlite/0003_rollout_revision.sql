-- A rollout's revision and the token of its last writer (bmsgate.fleet.server.rollouts.store): every change
-- of a rollout or of its members raises the revision, checked against the revision the change was decided
-- on, so writers in several server processes cannot overwrite each other (docs/fleet/rollouts.md,
-- "Several server processes"). The token (random, one per write) lets the rest of that write's
-- transaction apply only when its own revision check won.
-- depends: 0002_rollouts

ALTER TABLE rollouts ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN write_token TEXT;

-- One row: the revision of "which gateways are busy in an active rollout", raised by every rollout created
-- (only a creation makes gateways busy), so two creations cannot both pass the overlap check.
CREATE TABLE rollout_creations (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,
    write_token TEXT
);

INSERT INTO rollout_creations (id, revision) VALUES (1, 0);
