// An in-process, single-node harness for the task runtime tests: a replicated state that
// applies proposals at once (as a one-voter Raft would, on the next turn of the event
// loop), the real TaskRuntime and TaskService, a real HealthProbe against an Ollama
// stand-in, and a p2p host that has no peers. Nothing here touches the network beyond
// the stand-in on 127.0.0.1.
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import type { Entry } from '../../scheduler/consensus/types.ts';
import { ReplicatedState, type ApplyResult } from '../../scheduler/state/state.ts';
import type { AgentConfig } from '../config.ts';
import { EventBus } from '../events.ts';
import { HealthProbe } from '../probe/index.ts';
import { startStandin, type Standin, type StandinOptions } from '../../tests/ollama-standin/server.ts';
import { TaskRuntime, type TaskRuntimeTuning } from './runtime.ts';
import { TaskService, type TaskServiceDeps } from './service.ts';
import type { RaftStatusView } from './leader.ts';
import type { MemberView } from '../membership/membership.ts';

export interface HarnessOptions {
  standin?: StandinOptions;
  concurrency?: number;
  agents?: AgentConfig[];
  tuning?: TaskRuntimeTuning;
}

export interface Harness {
  nodeId: string;
  standin: Standin;
  state: () => ReplicatedState;
  runtime: TaskRuntime;
  service: TaskService;
  probe: HealthProbe;
  /** Raft status as the runtime sees it; set `leader` to null to simulate losing the leader. */
  raft: RaftStatusView;
  /** Membership as the runtime sees it (empty: no peers); tests may push members. */
  members: MemberView[];
  /** Commands proposed, by type, in order. */
  proposed: string[];
  close(): Promise<void>;
}

/** A host with no peers: publishing finds nobody, requests cannot reach anyone. */
const lonelyHost = {
  publish: async () => { throw new Error('no peers subscribed to the topic'); },
  subscribe: () => () => undefined,
  handle: async () => undefined,
  handleMessages: async () => undefined,
  request: (peerId: string): AsyncGenerator<Uint8Array> => {
    throw new Error(`no route to ${peerId} in the single-node harness`);
  },
  send: () => undefined,
  on: () => () => undefined,
  isConnected: () => false,
};

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const standin = await startStandin({ tokensPerSecond: 2_000, coldLoadMs: 0, models: ['llama3.2:1b', 'qwen2.5:7b'], ...options.standin });
  const nodeId = 'node-a';
  let state = new ReplicatedState();
  const bus = new EventBus();
  const raft: RaftStatusView = { role: 'leader', term: 1, leader: nodeId };
  const proposed: string[] = [];
  const members: MemberView[] = [];
  const probe = new HealthProbe({ ollamaUrl: standin.url, agents: options.agents ?? [], ollama: { intervalMs: 200 } });
  await probe.start();
  let runtime: TaskRuntime | null = null;
  const propose = async (data: string): Promise<ApplyResult | null> => {
    if (raft.leader === null) throw new HivemeshError(ErrorCode.noLeader, 'no leader is known; retry shortly', { retryAfterSeconds: 1 });
    // Commit happens later than the proposal, as in Raft.
    await new Promise((resolve) => setImmediate(resolve));
    const index = state.lastApplied + 1;
    const result = state.apply(index, data);
    proposed.push((JSON.parse(data) as { type: string }).type);
    const entry: Entry = { term: 1, index, type: 'normal', data };
    const at = Date.now();
    if (result.ok) for (const event of result.events) bus.publish({ type: 'task.status', at, event });
    runtime?.onApplied([{ entry, result }]);
    return result;
  };
  runtime = new TaskRuntime({
    nodeId,
    state: () => state,
    propose,
    raftStatus: () => raft,
    host: lonelyHost,
    members: () => members,
    probe,
    ollamaUrl: standin.url,
    concurrency: options.concurrency ?? 2,
    agents: options.agents ?? [],
    keepFinishedTasks: 1_000,
    keepFinishedTasksMs: 60_000,
    tuning: { reconcileEveryMs: 100, reportRetryDelayMs: () => 20, ...options.tuning },
  });
  await runtime.start();
  const service = new TaskService({
    state: () => state,
    propose,
    waitApplied: async () => undefined,
    bus,
    outputs: runtime.outputs,
    listedNodes: () => [{ id: nodeId, name: nodeId, state: 'alive', lastSeenAgoMs: 0 }],
  });
  const started = runtime;
  return {
    nodeId, standin, runtime: started, service, probe, raft, members, proposed,
    state: () => state,
    async close() {
      await started.stop();
      await probe.stop();
      await standin.close();
      state = new ReplicatedState();
    },
  };
}

export async function waitFor<T>(what: string, probe: () => T | null | undefined | false, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== null && value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * A task service over a bare replicated state that commits each proposal at once, with no
 * runtime or output: for tests of the service's and the routes' own answers.
 */
export function instantTaskService(deps: Pick<TaskServiceDeps, 'listedNodes'> & Partial<TaskServiceDeps>): { tasks: TaskService; state: ReplicatedState } {
  const state = new ReplicatedState();
  const tasks = new TaskService({
    state: () => state,
    propose: async (data) => state.apply(state.lastApplied + 1, data),
    waitApplied: async () => undefined,
    bus: new EventBus(),
    outputs: { follow: async function* () { /* no output here */ } },
    ...deps,
  });
  return { tasks, state };
}
