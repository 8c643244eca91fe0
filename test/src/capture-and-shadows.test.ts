// Issue 3 and the core of issue 4 under real QEMU: a live capture of the running demo VM while
// its writer works; production's block graph unchanged afterwards (also after the agent is
// killed at each step of a capture); shadows restored from the capture continue the workload
// with intact data; damage to the store is caught by verify and by restore.
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { recoverInterruptedCaptures } from "@shadowvm/agent/capture/capture-recovery";
import { CaptureStore } from "@shadowvm/agent/capture/store/index";
import { QmpClient } from "@shadowvm/agent/hypervisor/qemu/qmp-client";
import { restoreCapture } from "@shadowvm/agent/shadow/restored-capture";
import { startShadow } from "@shadowvm/agent/shadow/shadow-vm";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { tempWorkDir, verifyGuest, withDemoVm } from "./support/demo-guest.js";
import { AGENT_BIN, runCli } from "./support/run-cli.js";

const CHILD = fileURLToPath(new URL("./support/capture-child.js", import.meta.url));

/** Production's block graph: node names with their files, and whether the guest is running. */
async function productionState(qmpSocket: string): Promise<{ graph: string[]; status: string }> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    const nodes = await qmp.execute<{ "node-name": string; file: string }[]>("query-named-block-nodes", {
      flat: true,
    });
    const { status } = await qmp.execute<{ status: string }>("query-status");
    return { graph: nodes.map((n) => `${n["node-name"]}=${n.file}`).sort(), status };
  } finally {
    qmp.close();
  }
}

function waitLine(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(
      () => reject(new Error(`no ${pattern} within ${timeoutMs} ms; stdout: ${out} stderr: ${err}`)),
      timeoutMs,
    );
    child.stderr?.on("data", (d) => {
      err += d;
    });
    child.stdout?.on("data", (d) => {
      out += d;
      const m = pattern.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`capture child exited (${code}) before ${pattern}; stdout: ${out} stderr: ${err}`));
    });
  });
}

test("capture while writing, restore 3 shadows that continue with intact data, no trace left", async () => {
  await withDemoVm({ name: "cap-e2e", extraKernelArgs: "shadowvm.writer_rate=20" }, async (vm) => {
    const data = tempWorkDir("svm-cap-");
    const before = await productionState(vm.qmpSocket);
    const isolated = { SHADOWVM_AGENT__HYPERVISOR__QMP_SOCKETS: "[]" };
    const first = await runCli(
      AGENT_BIN,
      ["capture", vm.qmpSocket, "--qmp", vm.qmpSocket, "--data-dir", data, "--json"],
      {
        env: isolated,
        timeoutMs: 300_000,
      },
    );
    assert.is(first.code, 0, first.stderr);
    const record = JSON.parse(first.stdout) as Record<string, number | string>;
    for (const key of ["id", "vm", "pause_ms", "memory_bytes", "disk_bytes", "stored_bytes", "new_bytes"]) {
      assert.ok(record[key] !== undefined, `capture record has ${key}`);
    }
    assert.ok(
      (record["pause_ms"] as number) > 0 && (record["pause_ms"] as number) < 5000,
      `pause ${record["pause_ms"]} ms`,
    );
    assert.ok((record["memory_bytes"] as number) > 10 * 1024 * 1024);
    const after = await productionState(vm.qmpSocket);
    assert.equal(after, before, "production's block graph and run state are unchanged");
    assert.equal(readdirSync(join(data, "staging")), [], "no staging files left");

    const second = await runCli(
      AGENT_BIN,
      ["capture", vm.qmpSocket, "--qmp", vm.qmpSocket, "--data-dir", data, "--json"],
      {
        env: isolated,
        timeoutMs: 300_000,
      },
    );
    assert.is(second.code, 0, second.stderr);
    const again = JSON.parse(second.stdout) as { new_bytes: number; stored_bytes: number };
    assert.ok(
      again.new_bytes < again.stored_bytes * 0.5,
      `second capture added ${again.new_bytes} of ${again.stored_bytes} bytes`,
    );

    const verify = await runCli(AGENT_BIN, ["captures", "verify", String(record["id"]), "--data-dir", data], {
      env: isolated,
    });
    assert.is(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /: ok \(/);

    const store = await CaptureStore.open({
      dir: join(data, "captures"),
      keyFile: join(data, "keys", "capture-store.key"),
      readOnly: true,
    });
    try {
      const restored = await restoreCapture(store, String(record["id"]), join(data, "restored"));
      const shadows = await Promise.all(
        [0, 1, 2].map((i) =>
          startShadow(restored, { id: `cap-e2e-s${i}`, workDir: join(data, `shadow-${i}`) }),
        ),
      );
      try {
        for (const shadow of shadows) {
          const result = await verifyGuest(shadow.guestChannels["org.shadowvm.guest.0"]!);
          assert.ok(result.ok, `shadow ${shadow.id}: guest verify ${JSON.stringify(result)}`);
          assert.is(result.fsck, "clean");
          assert.ok(result.records > 0);
          const health = await fetch(`http://127.0.0.1:${shadow.httpPort}/cgi-bin/health`).then(
            (r) => r.json() as Promise<{ status: string }>,
          );
          assert.is(health.status, "ok");
        }
      } finally {
        await Promise.all(shadows.map((s) => s.stop()));
      }
      for (const shadow of shadows) {
        assert.ok(shadow.exited(), `shadow ${shadow.id} QEMU is gone`);
        assert.not.ok(readdirSync(data).includes(`shadow-${shadows.indexOf(shadow)}`), "shadow dir removed");
      }
      // Production went on untouched meanwhile.
      assert.ok((await verifyGuest(vm.guestChannelSocket)).ok, "production data intact");
    } finally {
      await store.close();
    }

    // A flipped bit in a stored chunk: verify fails, restore fails with a clear error. The second
    // capture goes first, so that every chunk left belongs to the first.
    const removed = await runCli(
      AGENT_BIN,
      ["captures", "rm", String((again as unknown as { id: string }).id), "--data-dir", data],
      {
        env: isolated,
      },
    );
    assert.is(removed.code, 0, removed.stderr);
    const chunksDir = join(data, "captures", "chunks");
    const shard = readdirSync(chunksDir).sort()[0]!;
    const chunk = join(chunksDir, shard, readdirSync(join(chunksDir, shard))[0]!);
    const bytes = readFileSync(chunk);
    bytes[bytes.length - 20]! ^= 0x01;
    writeFileSync(chunk, bytes);
    const bad = await runCli(AGENT_BIN, ["captures", "verify", String(record["id"]), "--data-dir", data], {
      env: isolated,
    });
    assert.is(bad.code, 1);
    assert.match(bad.stderr, /shadowvm-agent: error: capture .*chunk/);
    const damaged = await CaptureStore.open({
      dir: join(data, "captures"),
      keyFile: join(data, "keys", "capture-store.key"),
      readOnly: true,
    });
    try {
      await restoreCapture(damaged, String(record["id"]), join(data, "restored-again"));
      assert.unreachable("restoring a damaged capture must fail");
    } catch (err) {
      assert.match((err as Error).message, /cannot restore capture .*chunk/);
    } finally {
      await damaged.close();
    }
  });
});

test("an agent killed at each step of a capture leaves production as it was after recovery", async () => {
  await withDemoVm({ name: "cap-crash" }, async (vm) => {
    const before = await productionState(vm.qmpSocket);
    for (const step of ["prepared", "migrating", "snapshotted", "resumed", "copied"]) {
      const data = tempWorkDir("svm-crash-");
      const child = spawn(process.execPath, [CHILD, vm.qmpSocket, data, step], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      await waitLine(child, new RegExp(`AT ${step}`), 180_000);
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      const recovered = await recoverInterruptedCaptures(join(data, "staging"));
      assert.is(recovered.length, 1, `one capture to recover after a kill at ${step}`);
      assert.is(recovered[0]!.error, undefined, `recovery after ${step}: ${recovered[0]!.error}`);
      const after = await waitFor(
        async () => {
          const s = await productionState(vm.qmpSocket);
          return s.status === "running" ? s : undefined;
        },
        { timeoutMs: 30_000, what: "production running again" },
      );
      assert.equal(after, before, `block graph restored after a kill at ${step}`);
      const store = await CaptureStore.open({
        dir: join(data, "captures"),
        keyFile: join(data, "capture.key"),
      });
      const partial = await store.recover();
      assert.equal(await store.list(), [], "no capture was committed");
      assert.ok(partial.removed_work_dirs.length <= 1);
      await store.close();
    }
    // The hard timeout: a copy throttled far below what it needs aborts, and production is
    // restored before the command returns.
    const data = tempWorkDir("svm-timeout-");
    const slow = await runCli(
      AGENT_BIN,
      [
        "capture",
        vm.qmpSocket,
        "--qmp",
        vm.qmpSocket,
        "--data-dir",
        data,
        "--bandwidth",
        "0.01",
        "--timeout",
        "8",
      ],
      { env: { SHADOWVM_AGENT__HYPERVISOR__QMP_SOCKETS: "[]" }, timeoutMs: 120_000 },
    );
    assert.is(slow.code, 1, slow.stdout);
    assert.match(slow.stderr, /shadowvm-agent: error: .*did not finish within/);
    assert.equal(await productionState(vm.qmpSocket), before, "block graph restored after the timeout");
    assert.equal(readdirSync(join(data, "staging")), [], "no staging files left after the timeout");
    assert.ok(
      (await verifyGuest(vm.guestChannelSocket)).ok,
      "production data intact after five interrupted captures and a timeout",
    );
  });
});

test.run();
