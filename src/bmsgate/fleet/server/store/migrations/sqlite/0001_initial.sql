-- The fleet store, first schema (SQLite). Times are Unix seconds.
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
    home_lat REAL,
    home_lon REAL,
    online INTEGER NOT NULL DEFAULT 0,
    last_seen REAL,
    interval_s REAL,
    uptime_s REAL,
    buffer_queued INTEGER,
    buffer_dropped INTEGER,
    descriptors TEXT,
    inverter TEXT,
    inverter_at REAL,
    state_at REAL,
    rollup_from REAL
);

CREATE TABLE batteries (
    gateway TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    battery TEXT NOT NULL,
    at REAL NOT NULL,
    age_s REAL,
    stale INTEGER NOT NULL,
    snapshot TEXT,
    PRIMARY KEY (gateway, battery)
);

CREATE TABLE samples (
    gateway TEXT NOT NULL,
    battery TEXT NOT NULL,
    at REAL NOT NULL,
    voltage REAL,
    current REAL,
    power REAL,
    soc REAL,
    soh REAL,
    remaining_capacity REAL,
    cell_min REAL,
    cell_max REAL,
    cell_mean REAL,
    cell_delta REAL,
    temperature_min REAL,
    temperature_max REAL,
    temperature_mean REAL,
    mosfet_temperature REAL,
    cells BLOB,
    PRIMARY KEY (gateway, battery, at)
) WITHOUT ROWID;

CREATE INDEX samples_at ON samples (at);

CREATE TABLE samples_minute (
    gateway TEXT NOT NULL,
    battery TEXT NOT NULL,
    bucket REAL NOT NULL,
    n INTEGER NOT NULL,
    voltage_min REAL,
    voltage_avg REAL,
    voltage_max REAL,
    current_min REAL,
    current_avg REAL,
    current_max REAL,
    power_min REAL,
    power_avg REAL,
    power_max REAL,
    soc_min REAL,
    soc_avg REAL,
    soc_max REAL,
    soh_min REAL,
    soh_avg REAL,
    soh_max REAL,
    remaining_capacity_min REAL,
    remaining_capacity_avg REAL,
    remaining_capacity_max REAL,
    cell_min_min REAL,
    cell_min_avg REAL,
    cell_min_max REAL,
    cell_max_min REAL,
    cell_max_avg REAL,
    cell_max_max REAL,
    cell_mean_min REAL,
    cell_mean_avg REAL,
    cell_mean_max REAL,
    cell_delta_min REAL,
    cell_delta_avg REAL,
    cell_delta_max REAL,
    temperature_min_min REAL,
    temperature_min_avg REAL,
    temperature_min_max REAL,
    temperature_max_min REAL,
    temperature_max_avg REAL,
    temperature_max_max REAL,
    temperature_mean_min REAL,
    temperature_mean_avg REAL,
    temperature_mean_max REAL,
    mosfet_temperature_min REAL,
    mosfet_temperature_avg REAL,
    mosfet_temperature_max REAL,
    cells_min BLOB,
    cells_avg BLOB,
    cells_max BLOB,
    PRIMARY KEY (gateway, battery, bucket)
) WITHOUT ROWID;

CREATE INDEX samples_minute_bucket ON samples_minute (bucket);

CREATE TABLE samples_hour (
    gateway TEXT NOT NULL,
    battery TEXT NOT NULL,
    bucket REAL NOT NULL,
    n INTEGER NOT NULL,
    voltage_min REAL,
    voltage_avg REAL,
    voltage_max REAL,
    current_min REAL,
    current_avg REAL,
    current_max REAL,
    power_min REAL,
    power_avg REAL,
    power_max REAL,
    soc_min REAL,
    soc_avg REAL,
    soc_max REAL,
    soh_min REAL,
    soh_avg REAL,
    soh_max REAL,
    remaining_capacity_min REAL,
    remaining_capacity_avg REAL,
    remaining_capacity_max REAL,
    cell_min_min REAL,
    cell_min_avg REAL,
    cell_min_max REAL,
    cell_max_min REAL,
    cell_max_avg REAL,
    cell_max_max REAL,
    cell_mean_min REAL,
    cell_mean_avg REAL,
    cell_mean_max REAL,
    cell_delta_min REAL,
    cell_delta_avg REAL,
    cell_delta_max REAL,
    temperature_min_min REAL,
    temperature_min_avg REAL,
    temperature_min_max REAL,
    temperature_max_min REAL,
    temperature_max_avg REAL,
    temperature_max_max REAL,
    temperature_mean_min REAL,
    temperature_mean_avg REAL,
    temperature_mean_max REAL,
    mosfet_temperature_min REAL,
    mosfet_temperature_avg REAL,
    mosfet_temperature_max REAL,
    cells_min BLOB,
    cells_avg BLOB,
    cells_max BLOB,
    PRIMARY KEY (gateway, battery, bucket)
) WITHOUT ROWID;

CREATE INDEX samples_hour_bucket ON samples_hour (bucket);

CREATE TABLE events (
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    battery TEXT,
    alarm TEXT,
    detail TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (gateway, seq, at)
);

CREATE INDEX events_at ON events (at);

CREATE TABLE alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway TEXT NOT NULL,
    battery TEXT,
    kind TEXT NOT NULL,
    severity INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'closed')),
    message TEXT NOT NULL,
    value REAL,
    opened_at REAL NOT NULL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    closed_at REAL,
    closed_by TEXT
);

-- At most one alarm per (gateway, battery, kind) is not closed.
CREATE UNIQUE INDEX alarms_one_active ON alarms (gateway, COALESCE(battery, ''), kind) WHERE state <> 'closed';
CREATE INDEX alarms_gateway ON alarms (gateway, opened_at);
CREATE INDEX alarms_opened ON alarms (opened_at);

CREATE TABLE alarm_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id INTEGER NOT NULL REFERENCES alarms (id) ON DELETE CASCADE,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    actor TEXT,
    detail TEXT NOT NULL
);

CREATE INDEX alarm_history_alarm ON alarm_history (alarm_id, at);
