-- The fleet store, first schema (PostgreSQL). Times are Unix seconds.
-- Rollup columns follow bmsgate.fleet.server.store.repository.NUMERIC_FIELDS (a test checks it).

CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    name TEXT,
    site TEXT,
    tags TEXT,
    hardware TEXT,
    software_version TEXT,
    packs TEXT,
    location TEXT,
    home_lat DOUBLE PRECISION,
    home_lon DOUBLE PRECISION,
    online BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen DOUBLE PRECISION,
    interval_s DOUBLE PRECISION,
    uptime_s DOUBLE PRECISION,
    buffer_queued BIGINT,
    buffer_dropped BIGINT,
    descriptors TEXT,
    inverter TEXT,
    inverter_at DOUBLE PRECISION,
    state_at DOUBLE PRECISION,
    rollup_from DOUBLE PRECISION
);

CREATE TABLE batteries (
    gateway TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    battery TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    age_s DOUBLE PRECISION,
    stale BOOLEAN NOT NULL,
    snapshot TEXT,
    PRIMARY KEY (gateway, battery)
);

CREATE TABLE samples (
    gateway TEXT NOT NULL,
    battery TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    voltage DOUBLE PRECISION,
    current DOUBLE PRECISION,
    power DOUBLE PRECISION,
    soc DOUBLE PRECISION,
    soh DOUBLE PRECISION,
    remaining_capacity DOUBLE PRECISION,
    cell_min DOUBLE PRECISION,
    cell_max DOUBLE PRECISION,
    cell_mean DOUBLE PRECISION,
    cell_delta DOUBLE PRECISION,
    temperature_min DOUBLE PRECISION,
    temperature_max DOUBLE PRECISION,
    temperature_mean DOUBLE PRECISION,
    mosfet_temperature DOUBLE PRECISION,
    cells DOUBLE PRECISION[],
    PRIMARY KEY (gateway, battery, at)
) PARTITION BY RANGE (at);

CREATE TABLE samples_default PARTITION OF samples DEFAULT;

CREATE TABLE samples_minute (
    gateway TEXT NOT NULL,
    battery TEXT NOT NULL,
    bucket DOUBLE PRECISION NOT NULL,
    n BIGINT NOT NULL,
    voltage_min DOUBLE PRECISION,
    voltage_avg DOUBLE PRECISION,
    voltage_max DOUBLE PRECISION,
    current_min DOUBLE PRECISION,
    current_avg DOUBLE PRECISION,
    current_max DOUBLE PRECISION,
    power_min DOUBLE PRECISION,
    power_avg DOUBLE PRECISION,
    power_max DOUBLE PRECISION,
    soc_min DOUBLE PRECISION,
    soc_avg DOUBLE PRECISION,
    soc_max DOUBLE PRECISION,
    soh_min DOUBLE PRECISION,
    soh_avg DOUBLE PRECISION,
    soh_max DOUBLE PRECISION,
    remaining_capacity_min DOUBLE PRECISION,
    remaining_capacity_avg DOUBLE PRECISION,
    remaining_capacity_max DOUBLE PRECISION,
    cell_min_min DOUBLE PRECISION,
    cell_min_avg DOUBLE PRECISION,
    cell_min_max DOUBLE PRECISION,
    cell_max_min DOUBLE PRECISION,
    cell_max_avg DOUBLE PRECISION,
    cell_max_max DOUBLE PRECISION,
    cell_mean_min DOUBLE PRECISION,
    cell_mean_avg DOUBLE PRECISION,
    cell_mean_max DOUBLE PRECISION,
    cell_delta_min DOUBLE PRECISION,
    cell_delta_avg DOUBLE PRECISION,
    cell_delta_max DOUBLE PRECISION,
    temperature_min_min DOUBLE PRECISION,
    temperature_min_avg DOUBLE PRECISION,
    temperature_min_max DOUBLE PRECISION,
    temperature_max_min DOUBLE PRECISION,
    temperature_max_avg DOUBLE PRECISION,
    temperature_max_max DOUBLE PRECISION,
    temperature_mean_min DOUBLE PRECISION,
    temperature_mean_avg DOUBLE PRECISION,
    temperature_mean_max DOUBLE PRECISION,
    mosfet_temperature_min DOUBLE PRECISION,
    mosfet_temperature_avg DOUBLE PRECISION,
    mosfet_temperature_max DOUBLE PRECISION,
    cells_min DOUBLE PRECISION[],
    cells_avg DOUBLE PRECISION[],
    cells_max DOUBLE PRECISION[],
    PRIMARY KEY (gateway, battery, bucket)
);

CREATE INDEX samples_minute_bucket ON samples_minute (bucket);

CREATE TABLE samples_hour (
    gateway TEXT NOT NULL,
    battery TEXT NOT NULL,
    bucket DOUBLE PRECISION NOT NULL,
    n BIGINT NOT NULL,
    voltage_min DOUBLE PRECISION,
    voltage_avg DOUBLE PRECISION,
    voltage_max DOUBLE PRECISION,
    current_min DOUBLE PRECISION,
    current_avg DOUBLE PRECISION,
    current_max DOUBLE PRECISION,
    power_min DOUBLE PRECISION,
    power_avg DOUBLE PRECISION,
    power_max DOUBLE PRECISION,
    soc_min DOUBLE PRECISION,
    soc_avg DOUBLE PRECISION,
    soc_max DOUBLE PRECISION,
    soh_min DOUBLE PRECISION,
    soh_avg DOUBLE PRECISION,
    soh_max DOUBLE PRECISION,
    remaining_capacity_min DOUBLE PRECISION,
    remaining_capacity_avg DOUBLE PRECISION,
    remaining_capacity_max DOUBLE PRECISION,
    cell_min_min DOUBLE PRECISION,
    cell_min_avg DOUBLE PRECISION,
    cell_min_max DOUBLE PRECISION,
    cell_max_min DOUBLE PRECISION,
    cell_max_avg DOUBLE PRECISION,
    cell_max_max DOUBLE PRECISION,
    cell_mean_min DOUBLE PRECISION,
    cell_mean_avg DOUBLE PRECISION,
    cell_mean_max DOUBLE PRECISION,
    cell_delta_min DOUBLE PRECISION,
    cell_delta_avg DOUBLE PRECISION,
    cell_delta_max DOUBLE PRECISION,
    temperature_min_min DOUBLE PRECISION,
    temperature_min_avg DOUBLE PRECISION,
    temperature_min_max DOUBLE PRECISION,
    temperature_max_min DOUBLE PRECISION,
    temperature_max_avg DOUBLE PRECISION,
    temperature_max_max DOUBLE PRECISION,
    temperature_mean_min DOUBLE PRECISION,
    temperature_mean_avg DOUBLE PRECISION,
    temperature_mean_max DOUBLE PRECISION,
    mosfet_temperature_min DOUBLE PRECISION,
    mosfet_temperature_avg DOUBLE PRECISION,
    mosfet_temperature_max DOUBLE PRECISION,
    cells_min DOUBLE PRECISION[],
    cells_avg DOUBLE PRECISION[],
    cells_max DOUBLE PRECISION[],
    PRIMARY KEY (gateway, battery, bucket)
);

CREATE INDEX samples_hour_bucket ON samples_hour (bucket);

CREATE TABLE events (
    gateway TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    battery TEXT,
    alarm TEXT,
    detail TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (gateway, seq, at)
);

CREATE INDEX events_at ON events (at);

CREATE TABLE alarms (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gateway TEXT NOT NULL,
    battery TEXT,
    kind TEXT NOT NULL,
    severity INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'closed')),
    message TEXT NOT NULL,
    value DOUBLE PRECISION,
    opened_at DOUBLE PRECISION NOT NULL,
    acknowledged_at DOUBLE PRECISION,
    acknowledged_by TEXT,
    closed_at DOUBLE PRECISION,
    closed_by TEXT
);

-- At most one alarm per (gateway, battery, kind) is not closed.
CREATE UNIQUE INDEX alarms_one_active ON alarms (gateway, COALESCE(battery, ''), kind) WHERE state <> 'closed';
CREATE INDEX alarms_gateway ON alarms (gateway, opened_at);
CREATE INDEX alarms_opened ON alarms (opened_at);

CREATE TABLE alarm_history (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alarm_id BIGINT NOT NULL REFERENCES alarms (id) ON DELETE CASCADE,
    at DOUBLE PRECISION NOT NULL,
    action TEXT NOT NULL,
    actor TEXT,
    detail TEXT NOT NULL
);

CREATE INDEX alarm_history_alarm ON alarm_history (alarm_id, at);
