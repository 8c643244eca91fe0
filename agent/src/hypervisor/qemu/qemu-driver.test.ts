// The qemu driver against real QEMU processes (conformance suite), plus its parsing helpers and
// the error lines an operator sees for sockets that are missing, stale, not QMP, or that vanish.
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createBareQemuHost } from "../../testing/bare-qemu.js";
import { runDriverConformance } from "../driver-conformance.js";
import { parseInfoNetwork, QemuDriver } from "./qemu-driver.js";

runDriverConformance({
  name: "qemu",
  async createFixture(specs, unreachable) {
    const host = createBareQemuHost();
    for (const spec of specs) await host.start(spec);
    const missing = Array.from({ length: unreachable }, (_, i) => join(host.dir, `missing-${i}.qmp`));
    // Explicit sockets for the missing endpoints, a glob for the real ones (as in a config).
    const driver = new QemuDriver({ sockets: missing, socketGlobs: [join(host.dir, "*", "qmp.sock")] });
    return {
      driver,
      async killVm(name) {
        await host.vms.find((vm) => vm.spec.name === name)!.kill();
      },
      cleanup: () => host.cleanup(),
    };
  },
});

test("parses HMP info network into netdev types and host interfaces", () => {
  const text = [
    "nic0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:aa:bb:01",
    " \\ net0: index=0,type=user,net=10.0.2.0,restrict=on",
    "nic1: index=0,type=nic,model=e1000,macaddr=52:54:00:aa:bb:02",
    " \\ hostnet1: index=0,type=tap,ifname=tap101i1,script=/etc/qemu-ifup,downscript=no",
  ].join("\r\n");
  const netdevs = parseInfoNetwork(text);
  assert.equal(netdevs.get("net0"), { type: "user", ifname: undefined });
  assert.equal(netdevs.get("hostnet1"), { type: "tap", ifname: "tap101i1" });
  assert.is(netdevs.has("nic0"), false);
});

test.run();
