// Test help for the durable Raft log: holding some LevelDB writes back on their way in.
import type { Storage } from '../storage.ts';

/**
 * Makes every batch of `storage` whose operations mention `marker` (a key or value as JSON
 * text) wait for `hold()` before it reaches LevelDB; other batches go through at once.
 */
export function holdBatches(storage: Storage, marker: string, hold: () => Promise<void>): void {
  const db = storage.db as unknown as { batch: (...args: unknown[]) => Promise<void> };
  const batch = db.batch.bind(db);
  db.batch = async (...args: unknown[]) => {
    if (JSON.stringify(args[0]).includes(marker)) await hold();
    return batch(...args);
  };
}
