-- Rollouts (bmsgate.fleet.server.rollouts): the rollout, its frozen members, the per-gateway desired state
-- with its monotonic generation, and the audit log. JSON documents are TEXT. Times are Unix seconds.
-- depends: 0001_initial

CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    created_by TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL,
    progress TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE rollout_members (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    gateway TEXT NOT NULL,
    group_index INTEGER NOT NULL,
    jitter_s DOUBLE PRECISION NOT NULL,
    phase TEXT NOT NULL,
    outcome TEXT,
    reason TEXT,
    detail TEXT NOT NULL DEFAULT '',
    generation BIGINT,
    published_at DOUBLE PRECISION,
    clock_started_at DOUBLE PRECISION,
    reported_at DOUBLE PRECISION,
    target TEXT,
    previous TEXT,
    PRIMARY KEY (rollout_id, gateway)
);

CREATE INDEX rollout_members_gateway ON rollout_members (gateway, generation);

CREATE TABLE desired_states (
    gateway TEXT PRIMARY KEY,
    generation BIGINT NOT NULL,
    rollout_id TEXT,
    issued_at DOUBLE PRECISION,
    envelope TEXT
);

CREATE TABLE rollout_audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);

CREATE INDEX rollout_audit_rollout ON rollout_audit (rollout_id, at);
