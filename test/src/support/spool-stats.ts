// What an agent command left in its data dir's spool for the collector, counted per record class.
import { join } from "node:path";
import { Spool, type SpoolStats } from "@shadowvm/agent/spool/spool";

export async function spooledByClass(dataDir: string, agentId: string): Promise<SpoolStats["byClass"]> {
  const spool = await Spool.open({ dir: join(dataDir, "spool"), agentId, maxBytes: 64 * 2 ** 20 });
  try {
    return spool.stats().byClass;
  } finally {
    await spool.close();
  }
}
