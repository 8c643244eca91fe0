// Per-VM explorer state in LevelDB, so what a campaign learned survives agent restarts and can seed
// the explorer of a similar VM.
import { Level } from "level";
import type { ExplorerState } from "./types.js";

const PREFIX = "explorer-state:";

export class ExplorerStateStore {
  private readonly db: Level<string, ExplorerState>;

  constructor(location: string) {
    this.db = new Level<string, ExplorerState>(location, { valueEncoding: "json" });
  }

  async open(): Promise<void> {
    await this.db.open();
  }

  async load(vmId: string): Promise<ExplorerState | undefined> {
    const v = await this.db.get(PREFIX + vmId);
    return v ?? undefined;
  }

  async save(vmId: string, state: ExplorerState): Promise<void> {
    await this.db.put(PREFIX + vmId, { ...state, vm_id: vmId });
  }

  async delete(vmId: string): Promise<void> {
    await this.db.del(PREFIX + vmId);
  }

  /** VM ids with a saved state. */
  async list(): Promise<string[]> {
    const ids: string[] = [];
    for await (const key of this.db.keys({ gte: PREFIX, lt: `${PREFIX}\xff` }))
      ids.push(key.slice(PREFIX.length));
    return ids;
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
