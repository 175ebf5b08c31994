// Structurally malformed messages, of the kinds a schema cannot catch but the core promises
// to drop (messageProblem in scheduler/consensus/raft.ts): entries out of sequence, terms
// out of order, a snapshot from the future, rejections without their index, config entries
// that are not config. Only shapes no correct sender can produce, so dropping them never
// costs safety; a value that merely looks wrong (a commit index too high) would be a lie,
// not a malformation, and is outside Raft's fault model.
import type { Message } from '../consensus/types.ts';
import type { Prng } from './prng.ts';

/** A malformed variant of `message`, or null when this message has no field to garble. */
export function garble(message: Message, random: Prng): { message: Message; how: string } | null {
  const ways: (() => { message: Message; how: string } | null)[] = [
    () => ({ message: { ...message, term: -1 - random.int(3) }, how: 'negative term' }),
    () => ({ message: { ...message, type: 'gossip' as Message['type'] }, how: 'unknown type' }),
  ];
  if (message.type === 'append' && message.entries !== undefined && message.entries.length > 0) {
    const entries = message.entries;
    const position = random.int(entries.length);
    ways.push(
      () => ({ message: { ...message, entries: entries.map((entry, k) => k === position ? { ...entry, index: entry.index + 1 + random.int(3) } : entry) }, how: `entry ${position} out of sequence` }),
      () => ({ message: { ...message, entries: entries.map((entry, k) => k === position ? { ...entry, term: message.term + 1 } : entry) }, how: `entry ${position} from a future term` }),
      () => ({ message: { ...message, entries: entries.map((entry, k) => k === position ? { ...entry, type: 'config' as const, data: 'not a config change' } : entry) }, how: `entry ${position} is a config entry without a change` }),
    );
    if ((message.logTerm ?? 0) > 0) {
      ways.push(() => ({ message: { ...message, entries: entries.map((entry, k) => k === position ? { ...entry, term: (message.logTerm as number) - 1 } : entry) }, how: `entry ${position} older than its predecessor` }));
    }
  }
  if (message.type === 'append') ways.push(() => ({ message: { ...message, logIndex: undefined } as Message, how: 'append without logIndex' }));
  if (message.type === 'snapshot' && message.snapshot !== undefined) {
    ways.push(() => ({ message: { ...message, snapshot: { ...(message.snapshot as NonNullable<Message['snapshot']>), term: message.term + 1 } }, how: 'snapshot from a future term' }));
  }
  if (message.type === 'append-response' && message.reject === true) {
    ways.push(() => ({ message: { ...message, logIndex: undefined } as Message, how: 'rejection without logIndex' }));
  }
  if (message.type === 'heartbeat') ways.push(() => ({ message: { ...message, commit: undefined } as Message, how: 'heartbeat without commit' }));
  return random.pick(ways)();
}
