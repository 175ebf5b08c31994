// The application state machine each simulated node runs: a small key-value map fed by
// `Ready.committed` and `Ready.snapshot`. It also keeps a hash chain over every entry it
// applied, so two nodes (or a snapshot and a node) can be compared in O(1).
import type { Entry } from '../consensus/types.ts';
import { fnvNumber, fnvOffset, fnvString } from './hash.ts';

export interface KvCommand {
  key: string;
  value: string;
}

export function encodeSet(key: string, value: string): string {
  return `set ${key} ${value}`;
}

/** Parses `set KEY VALUE`; null for anything else (the core must never invent commands). */
export function decodeSet(data: string): KvCommand | null {
  const parts = data.split(' ');
  if (parts.length !== 3 || parts[0] !== 'set') return null;
  return { key: parts[1] as string, value: parts[2] as string };
}

interface KvImage {
  appliedIndex: number;
  chain: number;
  pairs: [string, string][];
}

/** The key-value state machine of one simulated node. */
export class KvStateMachine {
  appliedIndex = 0;
  /** Hash of the sequence of entries applied so far (index, term, type, data). */
  chain = fnvOffset;
  private readonly values = new Map<string, string>();

  get(key: string): string | undefined {
    return this.values.get(key);
  }

  /**
   * Applies the next committed entry. Returns an error text if the entry is not the next
   * one, which the simulator reports as a broken invariant (entries applied out of order).
   */
  apply(entry: Entry): string | null {
    if (entry.index !== this.appliedIndex + 1) {
      return `applied entry ${entry.index} after ${this.appliedIndex}: committed entries must be applied in order without gaps`;
    }
    if (entry.type === 'normal') {
      const command = decodeSet(entry.data);
      if (command === null) return `entry ${entry.index} carries '${entry.data}', which no client proposed`;
      this.values.set(command.key, command.value);
    }
    this.appliedIndex = entry.index;
    this.chain = chainStep(this.chain, entry);
    return null;
  }

  /** Serialises the state machine for a snapshot at `appliedIndex`. */
  image(): string {
    const pairs = [...this.values.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const image: KvImage = { appliedIndex: this.appliedIndex, chain: this.chain, pairs };
    return JSON.stringify(image);
  }

  /** Replaces the whole state with a snapshot image; returns an error text if it is malformed. */
  restore(data: string, snapshotIndex: number): string | null {
    let image: KvImage;
    try {
      image = JSON.parse(data) as KvImage;
    } catch {
      return `snapshot at ${snapshotIndex} carries data that is not a state-machine image`;
    }
    if (image.appliedIndex !== snapshotIndex) {
      return `snapshot at ${snapshotIndex} carries the state machine as of ${image.appliedIndex}`;
    }
    this.values.clear();
    for (const [key, value] of image.pairs) this.values.set(key, value);
    this.appliedIndex = image.appliedIndex;
    this.chain = image.chain;
    return null;
  }

  /** The empty state of a node that has neither snapshot nor applied entries. */
  reset(): void {
    this.values.clear();
    this.appliedIndex = 0;
    this.chain = fnvOffset;
  }
}

export function chainStep(chain: number, entry: Entry): number {
  let hash = fnvNumber(chain, entry.index);
  hash = fnvNumber(hash, entry.term);
  hash = fnvString(hash, entry.type);
  return fnvString(hash, entry.data);
}
