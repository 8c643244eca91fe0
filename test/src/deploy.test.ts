// deploy/: the systemd units pass `systemd-analyze verify`, and install then uninstall --purge
// leaves the machine as it was, with a working installation in between.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { runCli } from "./support/run-cli.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const UNITS = ["shadowvm-agent.service", "shadowvm-collector.service"].map((u) =>
  join(ROOT, "deploy", "systemd", u),
);
const PREFIX = "/opt/shadowvm-test-install";

function verify(units: string[]): string {
  // systemd-analyze prints problems on stderr and exits non-zero for errors.
  return execFileSync("systemd-analyze", ["verify", ...units], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** What an installation could leave behind, as a comparable snapshot. */
function machineState(): Record<string, string[] | string> {
  const ls = (dir: string) => (existsSync(dir) ? readdirSync(dir).sort() : ["(absent)"]);
  return {
    opt: ls("/opt"),
    etcShadowvm: ls("/etc/shadowvm"),
    units: ls("/etc/systemd/system").filter((f) => f.includes("shadowvm")),
    bin: ls("/usr/local/bin").filter((f) => f.includes("shadowvm")),
    varLib: ls("/var/lib").filter((f) => f.includes("shadowvm")),
    passwd: readFileSync("/etc/passwd", "utf8"),
    group: readFileSync("/etc/group", "utf8"),
  };
}

test("both unit files pass systemd-analyze verify", () => {
  const out = verify(UNITS);
  assert.not.match(out, /error/i);
});

test("install then uninstall --purge leaves the machine clean; the installed commands work", async () => {
  const before = machineState();
  assert.equal(before.bin, [], "no shadowvm command installed on this machine before the test");
  assert.equal(before.units, [], "no shadowvm unit installed on this machine before the test");
  try {
    execFileSync("bash", [join(ROOT, "deploy", "install.sh"), "--prefix", PREFIX], { stdio: "pipe" });
    assert.ok(existsSync(join(PREFIX, ".install-manifest")));
    assert.ok(existsSync("/etc/shadowvm/agent.yaml"), "agent config installed");
    verify(["/etc/systemd/system/shadowvm-agent.service", "/etc/systemd/system/shadowvm-collector.service"]);
    const help = await runCli("/usr/local/bin/shadowvm-agent", ["vms", "--help"]);
    assert.is(help.code, 0, help.stderr);
    assert.match(help.stdout, /Usage: shadowvm-agent vms/);
    assert.not.ok(
      execFileSync(
        "find",
        [PREFIX, "-path", `${PREFIX}/node_modules`, "-prune", "-o", "-name", "*.test.js", "-print"],
        {
          encoding: "utf8",
        },
      ).trim(),
      "no test files installed",
    );
    const again = (() => {
      try {
        execFileSync("bash", [join(ROOT, "deploy", "install.sh"), "--prefix", PREFIX], { stdio: "pipe" });
        return "";
      } catch (err) {
        return String((err as { stderr?: Buffer }).stderr);
      }
    })();
    assert.match(again, /already installed/, "a second install refuses instead of clobbering");
  } finally {
    execFileSync("bash", [join(ROOT, "deploy", "uninstall.sh"), "--prefix", PREFIX, "--purge"], {
      stdio: "pipe",
    });
  }
  assert.equal(machineState(), before);
});

test.run();
