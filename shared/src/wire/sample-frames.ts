// One envelope of every body kind, with every field set to a non-default value: for round-trip
// tests here and for other packages' tests (import "@shadowvm/shared/wire/sample-frames").
import { shadowvm } from "../../generated/shadowvm.js";
import type { EnvelopeBodyKind, EnvelopeInit } from "./frame.js";

const v1 = shadowvm.v1;

/** Deterministic bytes, different per seed. */
export function sampleBytes(seed: number, length = 32): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (seed * 31 + i * 7 + 1) & 0xff);
}

export function sampleProfile(): shadowvm.v1.StressProfile.$Properties {
  return {
    cpu_load: 1.5,
    memory_load: 0.8,
    io_load: 2.25,
    net_latency_ms: 120,
    net_loss_pct: 2.5,
    faults: [
      { kind: v1.FaultKind.FAULT_KIND_DISK_IO_ERROR, rate: 0.1, at_s: 30, duration_s: 60 },
      { kind: v1.FaultKind.FAULT_KIND_NMI, rate: 1, at_s: 90.5 },
    ],
    duration_s: 600,
  };
}

function sampleFailure(withRunId: boolean): shadowvm.v1.Failure.$Properties {
  return {
    title: "BUG: unable to handle page fault in ext4_writepages",
    class: "oops",
    frame: "ext4_writepages",
    fingerprint: "sha256:5f2c",
    corrupted: true,
    evidence: ["[  12.345] BUG: unable to handle page fault", "[  12.346] RIP: ext4_writepages+0x1a/0x90"],
    offset_ms: 12345,
    source: v1.FailureSource.FAILURE_SOURCE_CONSOLE,
    precursors: [
      "INFO: task NUM blocked for more than NUM seconds",
      "EXT4-fs warning (device vda1): ext4_end_bio:NUM: I/O error NUM",
    ],
    primary: true,
    ...(withRunId ? { shadow_run_id: "run-7" } : {}),
  };
}

/** Fresh objects on every call, so a test may mutate them. */
export function sampleEnvelopes(agentId = "agent-7"): Record<EnvelopeBodyKind, EnvelopeInit> {
  const bodies: Record<EnvelopeBodyKind, Omit<EnvelopeInit, "agent_id" | "epoch" | "seq" | "sent_at_ms">> = {
    hello: {
      hello: {
        agent_id: agentId,
        agent_version: "0.1.0",
        hostname: "kvm-host-3",
        protocol_version: 1,
        capabilities: ["telemetry", "capture", "fault:nmi"],
        client_nonce: sampleBytes(1),
      },
    },
    auth_challenge: {
      auth_challenge: { server_nonce: sampleBytes(2), enrolled: true, collector_version: "0.1.0" },
    },
    enroll_request: { enroll_request: { enrollment_token: "tok-abc", hostname: "kvm-host-3" } },
    enroll_result: { enroll_result: { agent_secret: sampleBytes(3) } },
    auth_response: { auth_response: { proof: sampleBytes(4) } },
    auth_result: {
      auth_result: {
        ok: true,
        server_proof: sampleBytes(5),
        resume: [
          { epoch: 3, committed_seq: 41 },
          { epoch: 2, committed_seq: 9000 },
        ],
        heartbeat_interval_ms: 5000,
      },
    },
    ack: {
      ack: {
        ranges: [
          { epoch: 3, first_seq: 1, last_seq: 40 },
          { epoch: 3, first_seq: 42, last_seq: 42 },
        ],
      },
    },
    error: {
      error: {
        code: v1.ErrorCode.ERROR_CODE_RATE_LIMITED,
        message: "too many frames: 1200/s, expected at most 1000/s",
        closes: true,
        ref_epoch: 3,
        ref_seq: 77,
        retry_after_ms: 2500,
      },
    },
    heartbeat: { heartbeat: { spool_pending_frames: 12, spool_pending_bytes: 48_000, running_shadows: 2 } },
    host_inventory: {
      host_inventory: {
        hostname: "kvm-host-3",
        cpus: 64,
        memory_bytes: 512 * 2 ** 30,
        kernel: "6.8.0-45-generic",
        hypervisor_driver: "libvirt",
        hypervisor_version: "10.0.0",
        capabilities: ["capture", "shadow", "fault:disk_io_error"],
        vm_uuids: ["6f1c0e5a-0d7e-4d0b-9d61-1f3c1e0e7a11", "0b8f7b42-52c1-4f8e-a1c2-3d4e5f607182"],
      },
    },
    vm_inventory: {
      vm_inventory: {
        name: "web-1",
        uuid: "6f1c0e5a-0d7e-4d0b-9d61-1f3c1e0e7a11",
        state: v1.VmState.VM_STATE_RUNNING,
        vcpus: 4,
        memory_mb: 8192,
        machine_type: "pc-q35-8.2",
        disks: [
          {
            node: "drive-virtio-disk0",
            file: "/var/lib/libvirt/images/web-1.qcow2",
            format: "qcow2",
            size_bytes: 40 * 2 ** 30,
            backing: "/var/lib/libvirt/images/base-ubuntu-24.04.qcow2",
          },
        ],
        nics: [
          {
            model: "virtio-net-pci",
            mac: "52:54:00:12:34:56",
            netdev_id: "hostnet0",
            netdev_type: "tap",
            host_interface: "vnet3",
          },
        ],
        qemu_cmdline: ["/usr/bin/qemu-system-x86_64", "-name", "guest=web-1", "-machine", "pc-q35-8.2"],
        pid: 4242,
        labels: { image: "ubuntu-24.04", kernel: "6.8.0-45", app_stack: "nginx+php" },
      },
    },
    telemetry_batch: {
      telemetry_batch: {
        samples: [
          {
            scope: v1.SampleScope.SAMPLE_SCOPE_VM,
            vm_uuid: "6f1c0e5a-0d7e-4d0b-9d61-1f3c1e0e7a11",
            ts_ms: 1_700_000_000_123,
            cpu_usage: 1.75,
            memory_used_bytes: 6 * 2 ** 30,
            memory_available_bytes: 2 * 2 ** 30,
            memory_balloon_bytes: 2 ** 29,
            disk_read_bytes: 123_456_789,
            disk_write_bytes: 987_654_321,
            disk_read_ops: 1234,
            disk_write_ops: 5678,
            net_rx_bytes: 2 ** 40,
            net_tx_bytes: 2 ** 41,
            net_rx_packets: 99_999,
            net_tx_packets: 88_888,
            net_rx_drops: 7,
            net_tx_drops: 3,
            extra: { steal_pct: 1.25, major_faults: 42 },
          },
          { scope: v1.SampleScope.SAMPLE_SCOPE_HOST, ts_ms: 1_700_000_000_124, cpu_usage: 30.5 },
        ],
      },
    },
    capture_record: {
      capture_record: {
        id: "cap-19",
        vm_name: "web-1",
        vm_uuid: "6f1c0e5a-0d7e-4d0b-9d61-1f3c1e0e7a11",
        started_at_ms: 1_700_000_000_000,
        finished_at_ms: 1_700_000_042_000,
        pause_ms: 180,
        memory_bytes: 8 * 2 ** 30,
        disk_bytes: 40 * 2 ** 30,
        stored_bytes: 3 * 2 ** 30,
        new_bytes: 2 ** 28,
        disks: [
          {
            node: "drive-virtio-disk0",
            file: "captures/cap-19/vda.qcow2",
            format: "qcow2",
            size_bytes: 40 * 2 ** 30,
            stored_bytes: 2 * 2 ** 30,
            new_bytes: 2 ** 27,
          },
        ],
        config_digest: "sha256:0a1b2c",
        status: v1.CaptureStatus.CAPTURE_STATUS_FAILED,
        error: "pause budget of 500 ms exceeded",
      },
    },
    shadow_run: {
      shadow_run: {
        id: "run-7",
        campaign_id: "camp-2",
        capture_id: "cap-19",
        vm_name: "web-1",
        vm_uuid: "6f1c0e5a-0d7e-4d0b-9d61-1f3c1e0e7a11",
        profile: sampleProfile(),
        strategy: "bayes",
        control: true,
        started_at_ms: 1_700_000_100_000,
        finished_at_ms: 1_700_000_700_000,
        outcome: v1.Outcome.OUTCOME_FAILED,
        failures: [sampleFailure(false)],
        notes: ["balloon could not reach target", "io throttle capped at 3x"],
      },
    },
    failure: { failure: sampleFailure(true) },
    signature_update: {
      signature_update: {
        fingerprint: "sha256:5f2c",
        title: "BUG: unable to handle page fault in ext4_writepages",
        class: "oops",
        first_seen_ms: 1_700_000_100_000,
        last_seen_ms: 1_700_000_900_000,
        count: 17,
        vms: ["6f1c0e5a-0d7e-4d0b-9d61-1f3c1e0e7a11"],
        profiles: [sampleProfile()],
      },
    },
    production_event: {
      production_event: {
        vm_uuid: "6f1c0e5a-0d7e-4d0b-9d61-1f3c1e0e7a11",
        vm_name: "web-1",
        ts_ms: 1_700_000_950_000,
        kind: v1.ProductionEventKind.PRODUCTION_EVENT_KIND_PRECURSOR,
        fingerprint: "sha256:5f2c",
        title: "BUG: unable to handle page fault in ext4_writepages",
        class: "oops",
        line: "[ 4242.000001] EXT4-fs warning (device vda1): ext4_end_bio:343: I/O error 10",
        pattern: "EXT4-fs warning (device vda1): ext4_end_bio:NUM: I/O error NUM",
        suppressed: 3,
        precursor_runs_with: 4,
        precursor_runs_without: 2,
      },
    },
  };
  const out = {} as Record<EnvelopeBodyKind, EnvelopeInit>;
  let seq = 0;
  for (const [kind, body] of Object.entries(bodies) as [EnvelopeBodyKind, EnvelopeInit][]) {
    seq += 1;
    out[kind] = { agent_id: agentId, epoch: 3, seq, sent_at_ms: 1_700_000_000_000 + seq, ...body };
  }
  return out;
}
