// The node's LevelDB (<data-dir>/db). Sublevels keep the parts apart: `local` for this
// node's own facts, `raft` for the consensus log, hard state and snapshots. Writes that
// others rely on are synced (fsync) before they are acknowledged.
import { join } from 'node:path';
import type { AbstractSublevel } from 'abstract-level';
import { Level } from 'level';

export class StorageError extends Error {
  override name = 'StorageError';
}

export type Sublevel = AbstractSublevel<Level<string, string>, string | Buffer | Uint8Array, string, string>;

export class Storage {
  readonly path: string;
  readonly db: Level<string, string>;
  readonly local: Sublevel;
  readonly raft: Sublevel;

  private constructor(path: string, db: Level<string, string>) {
    this.path = path;
    this.db = db;
    this.local = db.sublevel<string, string>('local', { valueEncoding: 'utf8' });
    this.raft = db.sublevel<string, string>('raft', { valueEncoding: 'utf8' });
  }

  static async open(dataDir: string): Promise<Storage> {
    const path = join(dataDir, 'db');
    const db = new Level<string, string>(path, { valueEncoding: 'utf8' });
    try {
      await db.open();
    } catch (error) {
      const cause = (error as { cause?: { message?: string } }).cause?.message ?? (error as Error).message;
      if (/lock/i.test(cause)) {
        throw new StorageError(`the database ${path} is in use by another process: is another hivemesh running with --data-dir ${dataDir}? Stop it, or give this one another --data-dir.`);
      }
      throw new StorageError(`cannot open the database ${path}: ${cause}`);
    }
    return new Storage(path, db);
  }

  async getLocal<T>(key: string): Promise<T | undefined> {
    const value = await this.local.get(key);
    return value === undefined ? undefined : (JSON.parse(value) as T);
  }

  async putLocal(key: string, value: unknown): Promise<void> {
    // A root batch carries `sync` (fsync) down to LevelDB; a sublevel's put has no such option in its types.
    await this.db.batch([{ type: 'put', sublevel: this.local, key, value: JSON.stringify(value) }], { sync: true });
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
