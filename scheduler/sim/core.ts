// What the simulator needs from a consensus core: exactly the public surface of the real
// core (scheduler/consensus/raft.ts), so the simulator drives it as the daemon does. Tests
// wrap a real core to break it on purpose and prove that the checker notices.
import { Raft } from '../consensus/raft.ts';
import type {
  ConfigChange, Entry, Message, NodeId, ProposeResult, RaftOptions, RaftRestore, RaftStatus, ReadIndexResult, Ready, Snapshot, TransferResult,
} from '../consensus/types.ts';

export interface SimCore {
  tick(): void;
  step(message: Message): void;
  propose(data: string): ProposeResult;
  proposeConfigChange(change: ConfigChange): ProposeResult;
  /** Starts a linearizable read; the answer comes back as a ReadState with `context`. */
  readIndex(context: string, options: { lease?: boolean }): ReadIndexResult;
  transferLeadership(to: NodeId): TransferResult;
  /** The application took a snapshot of its state machine at `index` (<= applied). */
  compact(index: number, data: string): Snapshot | null;
  hasReady(): boolean;
  ready(): Ready;
  advance(ready: Ready): void;
  /** During a Ready's write: the entries committed since that are already durable. */
  committedWhileWriting(): Entry[];
  status(): RaftStatus;
  /** Ticks of leader lease left; cheaper than status() and checked after every event. */
  leaseRemainingTicks(): number;
}

export type CoreFactory = (options: RaftOptions, restore: RaftRestore) => SimCore;

/** The real core. */
export const raftCore: CoreFactory = (options, restore) => new Raft(options, restore);
