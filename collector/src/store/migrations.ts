// The DuckDB schema, as ordered migrations. Each migration runs once, in its own transaction, and
// records itself in schema_version; a database written by a newer collector (a version this build
// does not know) is refused rather than guessed at. Never edit a released migration: append one.
// docs/telemetry.md documents every table and column.

export interface Migration {
  version: number;
  name: string;
  statements: string[];
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "telemetry, inventory, shadow results and ingest bookkeeping",
    statements: [
      // Ingest bookkeeping: what each agent stream has committed (the resume points and the
      // deduplication high-water marks) and one row per committed frame.
      `CREATE TABLE ingest_streams (
        agent_id VARCHAR NOT NULL,
        epoch UBIGINT NOT NULL,
        committed_seq UBIGINT NOT NULL,
        frames UBIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        PRIMARY KEY (agent_id, epoch)
      )`,
      `CREATE TABLE ingest_frames (
        agent_id VARCHAR NOT NULL,
        epoch UBIGINT NOT NULL,
        seq UBIGINT NOT NULL,
        kind VARCHAR NOT NULL,
        records UINTEGER NOT NULL,
        bytes UINTEGER NOT NULL,
        sent_at_ms BIGINT NOT NULL,
        committed_at_ms BIGINT NOT NULL,
        PRIMARY KEY (agent_id, epoch, seq)
      )`,
      `CREATE TABLE hosts (
        agent_id VARCHAR PRIMARY KEY,
        hostname VARCHAR NOT NULL,
        cpus UINTEGER NOT NULL,
        memory_bytes UBIGINT NOT NULL,
        kernel VARCHAR NOT NULL,
        hypervisor_driver VARCHAR NOT NULL,
        hypervisor_version VARCHAR NOT NULL,
        capabilities JSON NOT NULL,
        vm_uuids JSON NOT NULL,
        updated_at_ms BIGINT NOT NULL
      )`,
      `CREATE TABLE vms (
        agent_id VARCHAR NOT NULL,
        uuid VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        state VARCHAR NOT NULL,
        vcpus UINTEGER NOT NULL,
        memory_mb UBIGINT NOT NULL,
        machine_type VARCHAR NOT NULL,
        disks JSON NOT NULL,
        nics JSON NOT NULL,
        qemu_cmdline JSON NOT NULL,
        pid UINTEGER NOT NULL,
        labels JSON NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        PRIMARY KEY (agent_id, uuid)
      )`,
      // Only the identity columns of samples are NOT NULL: the writer never leaves a measurement
      // NULL (proto3 zero values), and checking 14 more constraints at commit cost a third of the
      // store's throughput (docs/benchmarks-telemetry.md).
      `CREATE TABLE samples (
        agent_id VARCHAR NOT NULL,
        scope UTINYINT NOT NULL,
        vm_uuid VARCHAR,
        ts_ms BIGINT NOT NULL,
        cpu_usage DOUBLE,
        memory_used_bytes UBIGINT,
        memory_available_bytes UBIGINT,
        memory_balloon_bytes UBIGINT,
        disk_read_bytes UBIGINT,
        disk_write_bytes UBIGINT,
        disk_read_ops UBIGINT,
        disk_write_ops UBIGINT,
        net_rx_bytes UBIGINT,
        net_tx_bytes UBIGINT,
        net_rx_packets UBIGINT,
        net_tx_packets UBIGINT,
        net_rx_drops UBIGINT,
        net_tx_drops UBIGINT,
        extra JSON
      )`,
      `CREATE TABLE captures (
        agent_id VARCHAR NOT NULL,
        id VARCHAR NOT NULL,
        vm_name VARCHAR NOT NULL,
        vm_uuid VARCHAR NOT NULL,
        started_at_ms BIGINT NOT NULL,
        finished_at_ms BIGINT NOT NULL,
        pause_ms UBIGINT NOT NULL,
        memory_bytes UBIGINT NOT NULL,
        disk_bytes UBIGINT NOT NULL,
        stored_bytes UBIGINT NOT NULL,
        new_bytes UBIGINT NOT NULL,
        disks JSON NOT NULL,
        config_digest VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        error VARCHAR NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        PRIMARY KEY (agent_id, id)
      )`,
      `CREATE TABLE shadow_runs (
        agent_id VARCHAR NOT NULL,
        id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        capture_id VARCHAR NOT NULL,
        vm_name VARCHAR NOT NULL,
        vm_uuid VARCHAR NOT NULL,
        profile JSON,
        strategy VARCHAR NOT NULL,
        control BOOLEAN NOT NULL,
        started_at_ms BIGINT NOT NULL,
        finished_at_ms BIGINT NOT NULL,
        outcome VARCHAR NOT NULL,
        failure_count UINTEGER NOT NULL,
        notes JSON NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        PRIMARY KEY (agent_id, id)
      )`,
      `CREATE TABLE failures (
        failure_id VARCHAR PRIMARY KEY,
        agent_id VARCHAR NOT NULL,
        shadow_run_id VARCHAR NOT NULL,
        title VARCHAR NOT NULL,
        class VARCHAR NOT NULL,
        frame VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        corrupted BOOLEAN NOT NULL,
        evidence JSON NOT NULL,
        offset_ms BIGINT NOT NULL,
        source VARCHAR NOT NULL,
        received_at_ms BIGINT NOT NULL
      )`,
      `CREATE TABLE signatures (
        agent_id VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        title VARCHAR NOT NULL,
        class VARCHAR NOT NULL,
        first_seen_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        count UBIGINT NOT NULL,
        vms JSON NOT NULL,
        profiles JSON NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        PRIMARY KEY (agent_id, fingerprint)
      )`,
    ],
  },
  {
    version: 2,
    name: "risk assessments (history), risk rounds, alerts and alert deliveries (issue 8)",
    statements: [
      // One row per (round, VM, signature); docs/risk-model.md explains every column.
      `CREATE TABLE risk_assessments (
        computed_at_ms BIGINT NOT NULL,
        vm_uuid VARCHAR NOT NULL,
        vm_name VARCHAR NOT NULL,
        agent_id VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        title VARCHAR NOT NULL,
        class VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        probability DOUBLE,
        confidence DOUBLE NOT NULL,
        confidence_level VARCHAR NOT NULL,
        time_to_failure_h DOUBLE,
        horizon_h DOUBLE NOT NULL,
        dimension VARCHAR NOT NULL,
        boundary DOUBLE NOT NULL,
        boundary_uncertainty DOUBLE NOT NULL,
        level DOUBLE,
        slope_per_h DOUBLE,
        forecast DOUBLE,
        forecast_error DOUBLE,
        samples INTEGER NOT NULL,
        runs INTEGER NOT NULL,
        failing_runs INTEGER NOT NULL,
        contradicting_runs INTEGER NOT NULL,
        run_ids JSON NOT NULL,
        fleet_peers JSON NOT NULL,
        explanation VARCHAR NOT NULL,
        mitigations JSON NOT NULL,
        detail JSON NOT NULL,
        PRIMARY KEY (computed_at_ms, vm_uuid, fingerprint)
      )`,
      `CREATE TABLE risk_rounds (
        round_ms BIGINT PRIMARY KEY,
        trigger VARCHAR NOT NULL,
        duration_ms DOUBLE NOT NULL,
        vms INTEGER NOT NULL,
        assessments INTEGER NOT NULL
      )`,
      `CREATE VIEW risk_current AS
        SELECT * FROM risk_assessments WHERE computed_at_ms = (SELECT max(round_ms) FROM risk_rounds)`,
      `CREATE TABLE alerts (
        alert_id VARCHAR PRIMARY KEY,
        vm_uuid VARCHAR NOT NULL,
        vm_name VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        title VARCHAR NOT NULL,
        class VARCHAR NOT NULL,
        severity VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        starts_at_ms BIGINT NOT NULL,
        ends_at_ms BIGINT,
        updated_at_ms BIGINT NOT NULL,
        last_sent_at_ms BIGINT,
        send_count INTEGER NOT NULL,
        delivered BOOLEAN NOT NULL,
        probability DOUBLE,
        confidence DOUBLE NOT NULL,
        confidence_level VARCHAR NOT NULL,
        time_to_failure_h DOUBLE,
        summary VARCHAR NOT NULL,
        mitigation VARCHAR NOT NULL,
        link VARCHAR NOT NULL,
        labels JSON NOT NULL,
        annotations JSON NOT NULL,
        resolved_reason VARCHAR,
        last_error VARCHAR
      )`,
      `CREATE TABLE alert_deliveries (
        alert_id VARCHAR NOT NULL,
        at_ms BIGINT NOT NULL,
        target VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        state VARCHAR NOT NULL,
        ok BOOLEAN NOT NULL,
        http_status INTEGER,
        error VARCHAR
      )`,
    ],
  },
  {
    version: 3,
    name: "failure precursors and production console events (issue 8, precursor matching)",
    statements: [
      // Failure.precursors: early-warning console patterns that preceded the failure in its shadow.
      "ALTER TABLE failures ADD COLUMN precursors JSON",
      // ProductionEvent frames: a precursor of a signature, or a real failure, seen on a production
      // VM's own console. event_id = hash of the event's content, so the same event sent twice
      // (a replayed frame, a new spool epoch) is stored once.
      `CREATE TABLE production_events (
        event_id VARCHAR PRIMARY KEY,
        agent_id VARCHAR NOT NULL,
        vm_uuid VARCHAR NOT NULL,
        vm_name VARCHAR NOT NULL,
        ts_ms BIGINT NOT NULL,
        kind VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        title VARCHAR NOT NULL,
        class VARCHAR NOT NULL,
        line VARCHAR NOT NULL,
        pattern VARCHAR NOT NULL,
        suppressed UINTEGER NOT NULL,
        received_at_ms BIGINT NOT NULL
      )`,
      "CREATE INDEX production_events_vm ON production_events (vm_uuid, fingerprint, ts_ms)",
    ],
  },
  {
    version: 4,
    name: "primary failure of a run (its consequences do not count as signatures)",
    statements: [
      // Failure.primary: the run's first-ranked failure. Rows from before (false) belong to runs
      // with no primary marked, which risk counts whole, as it did.
      "ALTER TABLE failures ADD COLUMN is_primary BOOLEAN DEFAULT false",
    ],
  },
  {
    version: 5,
    name: "how far a precursor warned in the shadows (ProductionEvent.precursor_runs_with/without)",
    statements: [
      // Runs in which the pattern preceded the failure, and runs that showed it and went their
      // full time without it. 0 and 0: an agent from before, or a failure event.
      "ALTER TABLE production_events ADD COLUMN runs_with UINTEGER DEFAULT 0",
      "ALTER TABLE production_events ADD COLUMN runs_without UINTEGER DEFAULT 0",
    ],
  },
];
