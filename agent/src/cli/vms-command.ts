// `shadowvm-agent vms`: the VMs this host's driver can see, as read over QMP.
import { formatBytes, formatTable } from "@shadowvm/shared";
import type { VmInventory } from "../hypervisor/driver.js";
import { type CommandContext, parseCommand } from "./cli-context.js";

export const VMS_USAGE = `Usage: shadowvm-agent vms [--json] [--qmp PATH]...

Lists the VMs the agent can see (configured QMP socket globs plus --qmp sockets), with vCPUs, RAM,
disks and NICs read over QMP. A VM that cannot be read is reported on stderr, one line each; the
exit code is 1 when a socket named with --qmp, or every socket, could not be read.`;

function vmRow(vm: VmInventory): string[] {
  return [
    vm.name,
    vm.uuid,
    vm.state,
    String(vm.vcpus),
    formatBytes(vm.memory_mb * 1024 * 1024),
    vm.disks.map((d) => `${d.node}:${d.format}:${formatBytes(d.size_bytes)}`).join(",") || "-",
    vm.nics.map((n) => `${n.model}/${n.mac}`).join(",") || "-",
  ];
}

export async function vmsCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, {});
  const driver = cmd.createDriver();
  try {
    const { vms, problems } = await driver.listVms();
    if (cmd.values.json) {
      ctx.io.out(JSON.stringify(vms, null, 2));
    } else if (vms.length > 0) {
      ctx.io.out(formatTable(["NAME", "UUID", "STATE", "VCPUS", "MEMORY", "DISKS", "NICS"], vms.map(vmRow)));
    } else if (problems.length === 0) {
      ctx.io.err(
        `shadowvm-agent: no VMs found (looked at: ${[...(cmd.values.qmp ?? []), ...cmd.config.hypervisor.qmp_sockets].join(", ")})`,
      );
    }
    for (const p of problems) ctx.io.err(`shadowvm-agent: error: ${p.error}`);
    const explicit = new Set(cmd.values.qmp ?? []);
    const explicitFailed = problems.some((p) => explicit.has(p.address));
    return explicitFailed || (problems.length > 0 && vms.length === 0) ? 1 : 0;
  } finally {
    await driver.close();
  }
}
