// How the demo's monitor keeps the alerts Alertmanager holds: every alert's first sighting, and the
// first alert of a VM for a given failure class, which the whole loop's lead time is measured from.
import { test } from "uvu";
import * as assert from "uvu/assert";
import type { Alertmanager, AlertmanagerAlert } from "./alertmanager.js";
import type { CollectorApi } from "./collector-api.js";
import { LoopMonitor } from "./loop-monitor.js";

function alert(vm: string, failureClass: string, signature: string): AlertmanagerAlert {
  return {
    labels: {
      alertname: "ShadowvmFailureRisk",
      vm,
      failure_class: failureClass,
      signature,
      severity: "critical",
    },
    annotations: {
      summary: `${vm}: ${failureClass}`,
      confidence: "0.30 (medium)",
      mitigation: "1. add memory",
    },
    startsAt: "2026-11-28T00:00:00Z",
    endsAt: "2026-11-28T01:00:00Z",
    status: { state: "active" },
  };
}

/** A monitor over an Alertmanager whose answers the test sets, on a clock the test moves. */
function monitorWith(api = {} as CollectorApi) {
  let held: AlertmanagerAlert[] = [];
  let now = 1000;
  const lines: string[] = [];
  const alertmanager = { alerts: async () => held } as unknown as Alertmanager;
  const monitor = new LoopMonitor({
    api,
    alertmanager,
    say: (l) => lines.push(l),
    now: () => now,
  });
  return {
    monitor,
    lines,
    hold: (a: AlertmanagerAlert[]) => {
      held = a;
    },
    at: (t: number) => {
      now = t;
    },
  };
}

test("two alerts for one VM in the same round: the one of the class asked for is found, whatever the order", async () => {
  for (const order of [
    ["performance", "oom"],
    ["oom", "performance"],
  ]) {
    const m = monitorWith();
    m.hold(order.map((c) => alert("prod", c, `sig-${c}`)));
    await m.monitor.pollAlertmanager();
    assert.is(m.monitor.firstAlert("prod", "oom")?.alert.labels["signature"], "sig-oom", order.join(","));
    assert.is(m.monitor.firstAlert("prod", "performance")?.alert.labels["signature"], "sig-performance");
    assert.is(m.monitor.firstAlert("prod", "io"), undefined, "no alert of a class never raised");
    assert.is(m.monitor.firstAlert("other"), undefined, "no alert for another VM");
    assert.is(m.lines.filter((l) => l.startsWith("ALERT")).length, 2, "both alerts are announced");
  }
});

test("the first sighting is kept across rounds, and a later alert of the class does not replace an earlier one", async () => {
  const m = monitorWith();
  m.hold([alert("prod", "performance", "p1")]);
  await m.monitor.pollAlertmanager();
  m.at(5000);
  m.hold([alert("prod", "performance", "p1"), alert("prod", "oom", "o1")]);
  await m.monitor.pollAlertmanager();
  m.at(9000);
  m.hold([alert("prod", "performance", "p1"), alert("prod", "oom", "o1"), alert("prod", "oom", "o2")]);
  await m.monitor.pollAlertmanager();
  assert.is(m.monitor.firstAlert("prod")?.seenAtMs, 1000, "the VM's first alert of any class");
  assert.is(m.monitor.firstAlert("prod")?.alert.labels["signature"], "p1");
  const oom = m.monitor.firstAlert("prod", "oom");
  assert.is(oom?.alert.labels["signature"], "o1");
  assert.is(oom?.seenAtMs, 5000, "seen when it first appeared, not at the last poll");
  assert.is(m.lines.filter((l) => l.startsWith("ALERT")).length, 3, "each alert announced once");
});

test("a risk round's line gives the time to failure as the risk table does: 'now' at the boundary", async () => {
  const vm = { uuid: "u-1", name: "prod", labels: {}, vcpus: 1, memory_mb: 256, risk: { assessed_at_ms: 1 } };
  let ttf = 0;
  const api = {
    vms: async () => [vm],
    metric: async () => 0,
    shadowRuns: async () => [],
    failures: async () => [],
    risk: async () => ({
      assessed_at_ms: vm.risk.assessed_at_ms,
      signatures: [
        {
          fingerprint: "fp",
          title: "OOM kill of svm-leak",
          class: "oom",
          status: "assessed",
          probability: 1,
          confidence: 0.4,
          confidence_level: "medium",
          time_to_failure_h: ttf,
        },
      ],
      boundary: [],
    }),
  } as unknown as CollectorApi;
  const m = monitorWith(api);
  await m.monitor.poll();
  assert.match(m.lines.find((l) => l.startsWith("risk round"))!, /time to failure now$/);
  ttf = 0.05;
  vm.risk.assessed_at_ms = 2;
  m.at(100_000);
  await m.monitor.poll();
  assert.match(m.lines.filter((l) => l.startsWith("risk round"))[1]!, /time to failure 3 min$/);
});

test.run();
