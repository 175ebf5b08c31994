// The consensus core's public API: the Raft state machine, its types, and the voter policy
// that decides membership changes.
export {
  Raft, applyConfigChange, committedBytesPerReadyMax, committedEntriesPerReadyMax, configChangeProblem, encodeConfigEntry,
  entryOverheadBytes, messageProblem, uncommittedBytesMax, utf8ByteLength,
} from './raft.ts';
export type * from './types.ts';
export { nextConfigChange } from './voter-policy.ts';
export type { VoterPolicyInput, KnownNode } from './voter-policy.ts';
