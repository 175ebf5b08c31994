// A test harness for the Raft core: an in-memory cluster (storage, network with
// partitions) plus a small interpreter for scripted scenarios with golden output, in the
// spirit of etcd's datadriven tests (testdata/*.txt: commands, then expected output after
// "----"). Pure: script.test.ts reads and writes the files.
import { Raft } from './raft.ts';
import type { ClusterConfig, ConfigChange, Entry, HardState, Message, NodeId, RaftOptions, ReadState, Ready, Snapshot, SoftState } from './types.ts';

/** What a node has made durable: the harness's stand-in for LevelDB. */
export interface MemoryStorage {
  hardState: HardState;
  snapshot: Snapshot | null;
  entries: Entry[];
}

export interface HarnessNode {
  id: NodeId;
  raft: Raft;
  options: RaftOptions;
  storage: MemoryStorage;
  initialConfig: ClusterConfig;
  /** Data of applied normal entries, in order; a snapshot replaces it with its data. */
  applied: string[];
}

export type NodeOptionOverrides = Partial<Omit<RaftOptions, 'id'>>;

/** Rounds of ready-and-deliver before stabilize gives up: a livelock is a bug to report. */
const stabilizeRoundsMax = 1_000;

export function defaultOptions(id: NodeId): RaftOptions {
  return {
    id,
    electionTicks: 10,
    heartbeatTicks: 1,
    driftTicks: 1,
    preVote: false,
    checkQuorum: false,
    maxEntriesPerAppend: 64,
    maxBytesPerAppend: 64 * 1024,
    maxInflightAppends: 8,
    // Scripts want exact timeouts: every election timeout is electionTicks.
    randomInt: () => 0,
  };
}

function describeEntries(entries: Entry[]): string {
  return entries.map((entry) => {
    if (entry.type === 'noop') return `${entry.term}/${entry.index} noop`;
    if (entry.type === 'config') {
      const change = JSON.parse(entry.data) as ConfigChange;
      return `${entry.term}/${entry.index} config ${change.type} ${change.node}`;
    }
    return `${entry.term}/${entry.index} ${JSON.stringify(entry.data)}`;
  }).join(', ');
}

export function describeMessage(message: Message): string {
  const head = `${message.from}->${message.to} ${message.type} t${message.term}`;
  switch (message.type) {
    case 'pre-vote':
    case 'vote':
      return `${head} last=${message.logTerm}/${message.logIndex}${message.transfer === true ? ' transfer' : ''}`;
    case 'pre-vote-response':
    case 'vote-response':
      return `${head} ${message.reject === true ? 'rejected' : 'granted'}`;
    case 'append':
      return `${head} prev=${message.logTerm}/${message.logIndex} commit=${message.commit} entries=[${describeEntries(message.entries ?? [])}]${message.quiet === true ? ' quiet' : ''}`;
    case 'append-response':
      if (message.reject === undefined) return `${head} (term notice)`;
      return message.reject
        ? `${head} rejected ${message.logIndex} hint=${message.hintTerm}/${message.hintIndex}`
        : `${head} ok match=${message.hintIndex}`;
    case 'heartbeat':
      return `${head} commit=${message.commit}`;
    case 'snapshot': {
      const snapshot = message.snapshot as Snapshot;
      return `${head} index=${snapshot.term}/${snapshot.index} voters=${snapshot.config.voters.join(',')} learners=${snapshot.config.learners.join(',')}`;
    }
    case 'snapshot-response':
      return `${head} ${message.reject === true ? 'rejected' : `ok match=${message.hintIndex}`}`;
    default:
      return head;
  }
}

/** Hooks for tests that check invariants on what nodes apply, become and read. */
export interface HarnessObserver {
  softState?(id: NodeId, soft: SoftState, term: number): void;
  applied?(id: NodeId, entries: Entry[]): void;
  readStates?(id: NodeId, reads: ReadState[]): void;
}

export class Harness {
  readonly nodes = new Map<NodeId, HarnessNode>();
  observer: HarnessObserver = {};
  /** Messages sent and not yet delivered, in send order. */
  network: Message[] = [];
  /** Node -> partition group; nodes in different groups cannot talk. Empty: fully connected. */
  private partitionOf = new Map<NodeId, number>();
  private output: string[] = [];
  /** Long randomized runs switch the transcript off. */
  quiet = false;

  log(line: string): void {
    if (this.quiet) return;
    this.output.push(line);
  }

  takeOutput(): string[] {
    const lines = this.output;
    this.output = [];
    return lines;
  }

  node(id: NodeId): HarnessNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}; add it with add-nodes`);
    return node;
  }

  addNode(id: NodeId, initialConfig: ClusterConfig, overrides: NodeOptionOverrides = {}, restore?: Partial<MemoryStorage>): HarnessNode {
    if (this.nodes.has(id)) throw new Error(`node ${id} exists already`);
    const options = { ...defaultOptions(id), ...overrides, id };
    const storage: MemoryStorage = {
      hardState: restore?.hardState ?? { term: 0, vote: null, commit: 0 },
      snapshot: restore?.snapshot ?? null,
      entries: restore?.entries ?? [],
    };
    const raft = new Raft(options, { hardState: storage.hardState, snapshot: storage.snapshot, entries: [...storage.entries], initialConfig });
    const node: HarnessNode = { id, raft, options, storage, initialConfig, applied: [] };
    this.nodes.set(id, node);
    return node;
  }

  /** Crash and restart: the node keeps only what it persisted. */
  restart(id: NodeId): void {
    const node = this.node(id);
    this.network = this.network.filter((message) => message.to !== id && message.from !== id);
    node.raft = new Raft(node.options, {
      hardState: { ...node.storage.hardState },
      snapshot: node.storage.snapshot,
      entries: [...node.storage.entries],
      initialConfig: node.initialConfig,
    });
    // The application restarts from its snapshot, then re-applies committed entries.
    const snapshot = node.storage.snapshot;
    node.applied = snapshot === null ? [] : [`<snapshot ${snapshot.index}: ${snapshot.data}>`];
  }

  /**
   * Crash and restart with the disk lost but the node id kept (a wiped data dir): the node
   * starts empty, knowing neither config nor log, and told that it lost its log, as the
   * daemon tells a member that comes back without its db (RaftRestore.lostLog).
   */
  wipe(id: NodeId): void {
    const node = this.node(id);
    this.network = this.network.filter((message) => message.to !== id && message.from !== id);
    node.storage = { hardState: { term: 0, vote: null, commit: 0 }, snapshot: null, entries: [] };
    node.initialConfig = { voters: [], learners: [] };
    node.raft = new Raft(node.options, { hardState: { ...node.storage.hardState }, snapshot: null, entries: [], initialConfig: node.initialConfig, lostLog: true });
    node.applied = [];
  }

  partition(groups: NodeId[][]): void {
    this.partitionOf.clear();
    groups.forEach((group, index) => group.forEach((id) => this.partitionOf.set(id, index)));
  }

  heal(): void {
    this.partitionOf.clear();
    this.cutLinks.clear();
  }

  /** Directed links that lose every message ("from->to"), for non-transitive failures. */
  readonly cutLinks = new Set<string>();

  private connected(from: NodeId, to: NodeId): boolean {
    if (this.cutLinks.has(`${from}->${to}`)) return false;
    const a = this.partitionOf.get(from);
    const b = this.partitionOf.get(to);
    if (a === undefined && b === undefined) return true;
    return a === b;
  }

  /** Persists, sends, applies and advances one Ready of one node (the driving loop). */
  processReady(id: NodeId): boolean {
    const node = this.node(id);
    if (!node.raft.hasReady()) return false;
    const ready: Ready = node.raft.ready();
    // 1. Persist.
    if (ready.snapshot !== null) {
      node.storage.snapshot = ready.snapshot;
      // An installed snapshot replaces the whole log (see Ready.snapshot).
      node.storage.entries = [];
      node.applied = [`<snapshot ${ready.snapshot.index}: ${ready.snapshot.data}>`];
      this.log(`${id} installed snapshot ${ready.snapshot.term}/${ready.snapshot.index}`);
    }
    if (ready.entries.length > 0) {
      const first = (ready.entries[0] as Entry).index;
      node.storage.entries = node.storage.entries.filter((entry) => entry.index < first).concat(ready.entries);
    }
    if (ready.hardState !== null) node.storage.hardState = { ...ready.hardState };
    if (ready.softState !== null) {
      const soft = ready.softState;
      const term = node.raft.status().term;
      this.log(`${id} is ${soft.role}${soft.learner ? ' (learner)' : ''} term=${term} leader=${soft.leader ?? 'none'}`);
      this.observer.softState?.(id, soft, term);
    }
    // 2. Send.
    this.network.push(...ready.messages);
    // 3. Apply.
    for (const entry of ready.committed) {
      if (entry.type === 'normal') node.applied.push(entry.data);
    }
    if (ready.committed.length > 0) {
      this.log(`${id} applied ${describeEntries(ready.committed)}`);
      this.observer.applied?.(id, ready.committed);
    }
    for (const read of ready.readStates) this.log(`${id} read-state ${read.context} index=${read.index}`);
    if (ready.readStates.length > 0) this.observer.readStates?.(id, ready.readStates);
    // 4. Advance.
    node.raft.advance(ready);
    return true;
  }

  /** Delivers every message in flight now (to the given nodes, or all); returns how many. */
  deliver(to?: Set<NodeId>): number {
    const now = this.network;
    this.network = [];
    let delivered = 0;
    // Dropped messages are summarised (one line per kind, with a count) to keep goldens short.
    const dropped = new Map<string, number>();
    for (const message of now) {
      if (to !== undefined && !to.has(message.to)) {
        this.network.push(message);
        continue;
      }
      const target = this.nodes.get(message.to);
      if (target === undefined || !this.connected(message.from, message.to)) {
        const line = `${describeMessage(message)} DROPPED`;
        dropped.set(line, (dropped.get(line) ?? 0) + 1);
        continue;
      }
      this.log(describeMessage(message));
      target.raft.step(message);
      delivered += 1;
    }
    for (const [line, count] of dropped) this.log(count > 1 ? `${line} x${count}` : line);
    return delivered;
  }

  /** Ready and deliver until nothing moves. */
  stabilize(): void {
    for (let round = 0; round < stabilizeRoundsMax; round += 1) {
      let moved = false;
      for (const id of [...this.nodes.keys()].sort()) {
        while (this.processReady(id)) moved = true;
      }
      if (this.network.length > 0) {
        this.deliver();
        moved = true;
      }
      if (!moved) return;
    }
    throw new Error(`no quiescence after ${stabilizeRoundsMax} rounds`);
  }

  tick(id: NodeId, count: number): void {
    const node = this.node(id);
    for (let i = 0; i < count; i += 1) node.raft.tick();
  }

  describeStatus(id: NodeId): string[] {
    const status = this.node(id).raft.status();
    const lines = [
      `${id}: ${status.role}${status.learner ? ' (learner)' : ''} term=${status.term} leader=${status.leader ?? 'none'} commit=${status.commit} applied=${status.applied} log=[${status.firstIndex}, ${status.lastIndex}] lease=${status.leaseRemainingTicks}`,
      `  voters=${status.config.voters.join(',')} learners=${status.config.learners.join(',')}${status.transferee !== null ? ` transferee=${status.transferee}` : ''}${status.pendingReads > 0 ? ` pending-reads=${status.pendingReads}` : ''}`,
    ];
    for (const [peer, progress] of Object.entries(status.progress).sort(([a], [b]) => (a < b ? -1 : 1))) {
      lines.push(`  ${peer}: match=${progress.match} next=${progress.next} ${progress.state}${progress.recentActive ? ' active' : ''}${progress.inflight > 0 ? ` inflight=${progress.inflight}` : ''}`);
    }
    return lines;
  }

  describeLog(id: NodeId): string {
    const node = this.node(id);
    const snapshot = node.storage.snapshot;
    const head = snapshot === null ? '' : `snapshot ${snapshot.term}/${snapshot.index}; `;
    return `${id}: ${head}${describeEntries(node.storage.entries)}`;
  }
}

function parseList(value: string | undefined): NodeId[] {
  return value === undefined || value === '' ? [] : value.split(',');
}

function parseArguments(words: string[]): { positional: string[]; named: Map<string, string> } {
  const positional: string[] = [];
  const named = new Map<string, string>();
  for (const word of words) {
    const equals = word.indexOf('=');
    if (equals > 0) named.set(word.slice(0, equals), word.slice(equals + 1));
    else positional.push(word);
  }
  return { positional, named };
}

function nodeOverrides(named: Map<string, string>): NodeOptionOverrides {
  const overrides: NodeOptionOverrides = {};
  const flag = (key: string): boolean | undefined => (named.has(key) ? named.get(key) === 'true' : undefined);
  const number = (key: string): number | undefined => (named.has(key) ? Number(named.get(key)) : undefined);
  const preVote = flag('prevote');
  const checkQuorum = flag('checkquorum');
  if (preVote !== undefined) overrides.preVote = preVote;
  if (checkQuorum !== undefined) overrides.checkQuorum = checkQuorum;
  const numeric: [string, keyof NodeOptionOverrides][] = [
    ['election', 'electionTicks'], ['heartbeat', 'heartbeatTicks'], ['drift', 'driftTicks'],
    ['max-entries', 'maxEntriesPerAppend'], ['max-bytes', 'maxBytesPerAppend'], ['inflight', 'maxInflightAppends'],
  ];
  for (const [key, option] of numeric) {
    const value = number(key);
    if (value !== undefined) (overrides as Record<string, unknown>)[option] = value;
  }
  return overrides;
}

/** Runs one command against the harness and returns its output lines. */
export function runCommand(harness: Harness, line: string): string[] {
  const [command, ...rest] = line.trim().split(/\s+/);
  const { positional, named } = parseArguments(rest);
  const ids = (from: number): NodeId[] => positional.slice(from);
  switch (command) {
    case 'add-nodes': {
      const count = Number(positional[0]);
      const config: ClusterConfig = { voters: parseList(named.get('voters')), learners: parseList(named.get('learners')) };
      const overrides = nodeOverrides(named);
      // timeout-offsets=0,0,5: node i's election timeout is electionTicks + offset i.
      const offsets = parseList(named.get('timeout-offsets')).map(Number);
      // log-terms=1,1,4: the nodes start with stored entries of these terms (and that last term).
      const logTerms = parseList(named.get('log-terms')).map(Number);
      const entries: Entry[] = logTerms.map((term, offset) => ({ term, index: offset + 1, type: 'normal', data: `i${offset + 1}t${term}` }));
      const term = Number(named.get('term') ?? logTerms[logTerms.length - 1] ?? 0);
      for (let i = 0; i < count; i += 1) {
        const id = String(harness.nodes.size + 1);
        const offset = offsets[i] ?? 0;
        const restore = entries.length > 0 || term > 0 ? { hardState: { term, vote: null, commit: 0 }, entries: [...entries] } : undefined;
        harness.addNode(id, config, { ...overrides, randomInt: (n) => Math.min(offset, n - 1) }, restore);
        harness.log(`${id} added voters=${config.voters.join(',')} learners=${config.learners.join(',')}`);
      }
      break;
    }
    case 'campaign':
      if (!harness.node(positional[0] as NodeId).raft.campaign()) harness.log(`${positional[0]} may not campaign`);
      break;
    case 'tick':
      harness.tick(positional[0] as NodeId, Number(positional[1] ?? 1));
      break;
    case 'tick-election':
    case 'tick-heartbeat':
      for (const id of ids(0)) {
        const options = harness.node(id).options;
        harness.tick(id, command === 'tick-election' ? options.electionTicks : options.heartbeatTicks);
      }
      break;
    case 'stabilize':
      harness.stabilize();
      break;
    case 'process-ready':
      for (const id of ids(0).length > 0 ? ids(0) : [...harness.nodes.keys()].sort()) harness.processReady(id);
      break;
    case 'deliver-msgs':
      harness.deliver(ids(0).length > 0 ? new Set(ids(0)) : undefined);
      break;
    case 'drop-msgs':
      harness.log(`dropped ${harness.network.length} messages`);
      harness.network = [];
      break;
    case 'propose': {
      const result = harness.node(positional[0] as NodeId).raft.propose(positional.slice(1).join(' '));
      harness.log(result.ok ? `${positional[0]} proposed at ${result.term}/${result.index}` : `${positional[0]} refused: ${result.reason}: ${result.message}`);
      break;
    }
    case 'propose-conf-change': {
      const change = { type: positional[1], node: positional[2] } as ConfigChange;
      const result = harness.node(positional[0] as NodeId).raft.proposeConfigChange(change);
      harness.log(result.ok ? `${positional[0]} proposed ${change.type} ${change.node} at ${result.term}/${result.index}` : `${positional[0]} refused: ${result.reason}: ${result.message}`);
      break;
    }
    case 'read-index': {
      const result = harness.node(positional[0] as NodeId).raft.readIndex(positional[1] as string, { lease: named.get('lease') === 'true' });
      if (!result.ok) harness.log(`${positional[0]} refused read: ${result.reason}: ${result.message}`);
      break;
    }
    case 'transfer-leadership': {
      const result = harness.node(positional[0] as NodeId).raft.transferLeadership(positional[1] as NodeId);
      if (!result.ok) harness.log(`${positional[0]} refused transfer: ${result.reason}: ${result.message}`);
      break;
    }
    case 'compact': {
      const node = harness.node(positional[0] as NodeId);
      const index = Number(positional[1]);
      const snapshot = node.raft.compact(index, `state@${index}`);
      if (snapshot === null) harness.log(`${positional[0]} already compacted past ${index}`);
      else {
        node.storage.snapshot = snapshot;
        node.storage.entries = node.storage.entries.filter((entry) => entry.index > index);
        harness.log(`${positional[0]} compacted to ${snapshot.term}/${snapshot.index}`);
      }
      break;
    }
    case 'partition': {
      const groups = positional.join(' ').split('|').map((group) => group.trim().split(/\s+/).filter((id) => id !== ''));
      harness.partition(groups);
      break;
    }
    case 'heal':
      harness.heal();
      break;
    case 'cut-link': {
      // cut-link 1 3: messages between 1 and 3 are lost both ways; the others still flow.
      const [a, b] = positional as [NodeId, NodeId];
      harness.cutLinks.add(`${a}->${b}`);
      harness.cutLinks.add(`${b}->${a}`);
      break;
    }
    case 'run-ticks': {
      // run-ticks 12: twelve rounds of every node ticking once, as real clocks do, then
      // stabilize. Heartbeat traffic is left out of the transcript to keep it readable.
      for (let i = 0; i < Number(positional[0] ?? 1); i += 1) {
        for (const id of [...harness.nodes.keys()].sort()) harness.tick(id, 1);
        harness.stabilize();
      }
      const lines = harness.takeOutput().filter((text) => !/ heartbeat(-response)? /.test(text));
      for (const text of lines) harness.log(text);
      break;
    }
    case 'restart':
      for (const id of ids(0)) harness.restart(id);
      break;
    case 'status':
      for (const id of ids(0).length > 0 ? ids(0) : [...harness.nodes.keys()].sort()) {
        for (const statusLine of harness.describeStatus(id)) harness.log(statusLine);
      }
      break;
    case 'log':
      for (const id of ids(0).length > 0 ? ids(0) : [...harness.nodes.keys()].sort()) harness.log(harness.describeLog(id));
      break;
    case 'applied':
      for (const id of ids(0).length > 0 ? ids(0) : [...harness.nodes.keys()].sort()) harness.log(`${id}: ${harness.node(id).applied.join(' ')}`);
      break;
    default:
      throw new Error(`unknown command ${JSON.stringify(command)}`);
  }
  return harness.takeOutput();
}

/**
 * Runs a script: blocks separated by blank lines, each commands (lines starting with # are
 * comments), a "----" line, then the expected output ("ok" when a block prints nothing).
 * Returns each block's expected and actual output and the file text to rewrite with.
 */
export function runScript(text: string): { cases: { commands: string[]; expected: string[]; actual: string[] }[]; rewritten: string } {
  const harness = new Harness();
  const results: { commands: string[]; expected: string[]; actual: string[] }[] = [];
  const blocks: string[] = [];
  // Keep comment lines in the rewritten file: they document the scenario.
  const chunks = text.split(/\n\s*\n/).filter((chunk) => chunk.trim() !== '');
  for (const chunk of chunks) {
    const lines = chunk.split('\n');
    const separator = lines.indexOf('----');
    if (separator < 0) {
      blocks.push(chunk); // a comment-only block
      continue;
    }
    const commandLines = lines.slice(0, separator);
    const commands = commandLines.filter((line) => !line.startsWith('#'));
    const expected = lines.slice(separator + 1);
    while (expected.length > 0 && (expected[expected.length - 1] as string).trim() === '') expected.pop();
    const actual: string[] = [];
    for (const command of commands) actual.push(...runCommand(harness, command));
    if (actual.length === 0) actual.push('ok');
    results.push({ commands, expected, actual });
    blocks.push([...commandLines, '----', ...actual].join('\n'));
  }
  return { cases: results, rewritten: `${blocks.join('\n\n')}\n` };
}
