// TaskService.assign (PUT /api/tasks/:id/assign) on a real replicated state: the node a pin
// names is looked up in the node list `hivemesh nodes` shows, dead nodes included, and a
// dead one is refused as dead; a pin to a node that cannot run the task answers with the
// reason it waits, as a submit does.
import { describe, expect, it } from 'vitest';
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import type { NodeView } from '../../scheduler/tasks/node-view.ts';
import type { ListedNode } from './service.ts';
import { instantTaskService } from './test-harness.ts';
import { encodeCommand } from '../../scheduler/state/commands.ts';
import { validateTaskSubmit, type TaskInput } from '../../protocol/tasks.ts';
import { ReplicatedState } from '../../scheduler/state/state.ts';
import { TokenService } from '../tokens.ts';
import { hashToken } from '../secrets.ts';

function validInput(): TaskInput {
  const validation = validateTaskSubmit({ model: 'llama3.2:1b', prompt: 'hello' });
  if (!validation.ok) throw new Error('invalid');
  return validation.input;
}

const model = 'mistral:7b';

function view(id: string, overrides: Partial<NodeView> = {}): NodeView {
  return { id, alive: true, modelsInstalled: ['llama3.2:1b'], modelsLoaded: [], tokensPerSecond: {}, running: 0, concurrencyLimit: 2, agents: [], ...overrides };
}

/** The node list: op1 alive, op2 dead (heard before), a voter never heard, op3 suspect, and a name reused by a new node. */
const listed: ListedNode[] = [
  { id: 'id-op1', name: 'op1', state: 'alive', lastSeenAgoMs: 0 },
  { id: 'id-op2', name: 'op2', state: 'dead', lastSeenAgoMs: 95_000 },
  { id: 'id-unheard', name: 'id-unheard', state: 'dead', lastSeenAgoMs: 40_000, neverHeard: true },
  { id: 'id-op3', name: 'op3', state: 'suspect', lastSeenAgoMs: 3_000 },
  { id: 'id-old-op4', name: 'op4', state: 'dead', lastSeenAgoMs: 600_000 },
  { id: 'id-op4', name: 'op4', state: 'alive', lastSeenAgoMs: 0 },
  { id: 'id-op5-a', name: 'op5', state: 'alive', lastSeenAgoMs: 0 },
  { id: 'id-op5-b', name: 'op5', state: 'suspect', lastSeenAgoMs: 2_000 },
  { id: 'id-op6-old', name: 'op6', state: 'dead', lastSeenAgoMs: 900_000 },
  { id: 'id-op6', name: 'op6', state: 'dead', lastSeenAgoMs: 30_000 },
];

/** A service over a state that commits each proposal at once. */
function service() {
  return instantTaskService({
    nodeViews: () => [view('id-op1'), view('id-op2', { alive: false }), view('id-op3', { alive: false }), view('id-op4', { modelsInstalled: [model] })],
    listedNodes: () => listed,
  });
}

async function refusal(promise: Promise<unknown>): Promise<HivemeshError> {
  const error = await promise.then(() => null, (caught: unknown) => caught);
  expect(error).toBeInstanceOf(HivemeshError);
  return error as HivemeshError;
}

describe('TaskService.assign', () => {
  it('refuses a pin to a node the node list shows dead, by name or id, with a 409 that says so', async () => {
    const { tasks, state } = service();
    const { task } = await tasks.submit({ model, prompt: 'hello' });
    for (const node of ['op2', 'id-op2']) {
      const error = await refusal(tasks.assign(task.id, node));
      expect(error.code).toBe('conflict');
      expect(error.message).toBe('node op2 (id-op2) is dead (last seen 95 s ago); a task pinned to it would wait until it comes back. Pin to an alive node: `hivemesh nodes` lists them');
      expect(error.details).toEqual({ node: 'id-op2', state: 'dead' });
    }
    // A node only the Raft configuration names: dead, not unknown.
    const unheard = await refusal(tasks.assign(task.id, 'id-unheard'));
    expect(unheard.code).toBe('conflict');
    expect(unheard.message).toMatch(/^node id-unheard is dead \(never heard from by this node\); .*Pin to an alive node/);
    expect(state.getTask(task.id)!.pinnedNode).toBeNull();
  });

  it('answers a pin to a node that lacks the model with why the task waits, at once', async () => {
    const { tasks } = service();
    const { task } = await tasks.submit({ model, prompt: 'hello' });
    const pinned = await tasks.assign(task.id, 'op1');
    expect(pinned.pinnedNode).toBe('id-op1');
    expect(pinned.waitingFor).toBe(`pinned to node id-op1, which lacks model ${model}`);
    // A suspect node may come back: the pin is taken, and the answer says it is not alive.
    expect((await tasks.assign(task.id, 'op3')).waitingFor).toBe('pinned to node id-op3, which is not alive');
  });

  it('takes a name shared with a dead node to mean the node that is not dead; refuses an ambiguous or unknown node with a 400', async () => {
    const { tasks } = service();
    const { task } = await tasks.submit({ model, prompt: 'hello' });
    const pinned = await tasks.assign(task.id, 'op4');
    expect(pinned.pinnedNode).toBe('id-op4');
    expect(pinned.waitingFor).toBeNull();
    // Two nodes not dead under one name: which one is for the user to say.
    const ambiguous = await refusal(tasks.assign(task.id, 'op5'));
    expect(ambiguous.code).toBe('invalid_input');
    expect(ambiguous.message).toBe('node: 2 nodes are named "op5" (id-op5-a, id-op5-b); pin by id');
    // Dead ones only: the one heard last is refused as dead.
    expect((await refusal(tasks.assign(task.id, 'op6'))).message).toMatch(/^node op6 \(id-op6\) is dead \(last seen 30 s ago\)/);
    const unknown = await refusal(tasks.assign(task.id, 'nope'));
    expect(unknown.code).toBe('invalid_input');
    expect(unknown.message).toBe('node: no node "nope" is known; `hivemesh nodes` lists ids and names');
  });
});

describe('TaskService.find', () => {
  const noLeader = () => new HivemeshError('no_leader' as never, 'the leader did not answer; retry shortly', { retryAfterSeconds: 1 });

  it('does not answer 404 for a task it does not know while no leader can be asked: it waits for one, then answers 503', async () => {
    // The leader acknowledged the task and died before this node learned it was committed.
    let barriers = 0;
    const { tasks } = instantTaskService({ listedNodes: () => [], findLeaderWaitMs: 300, readBarrier: async () => { barriers += 1; throw noLeader(); } });
    const error = await refusal(tasks.find('t_justacked1'));
    expect(error.code).toBe('no_leader');
    expect(error.retryAfterSeconds).toBe(1);
    expect(error.message).toMatch(/^task t_justacked1 is not known on this node, and no leader is reachable to tell whether it was just created through another node; retry shortly/);
    expect(barriers).toBeGreaterThan(1);
  });

  it('finds the task once a new leader is there to ask, and answers 404 only after a barrier that succeeded', async () => {
    // This node holds the submit in its log but learns it is committed only from the next
    // leader: its barrier fails twice (the election), then the entry is applied.
    const submit = encodeCommand({ type: 'task.submit', id: 't_justacked2', input: validInput(), at: 1, idempotencyKey: null, bodyHash: 'h' });
    let failures = 2;
    const late = instantTaskService({
      listedNodes: () => [],
      readBarrier: async () => {
        if (failures > 0) {
          failures -= 1;
          throw noLeader();
        }
        if (late.state.lastApplied === 0) late.state.apply(1, submit);
      },
    });
    expect((await late.tasks.find('t_justacked2')).id).toBe('t_justacked2');
    expect(failures).toBe(0);
    expect((await refusal(late.tasks.find('t_nosuchtask1'))).code).toBe('not_found');
  });
});

describe('TaskService.events', () => {
  it('ends with the final state when the task finished without a status event on this node (caught up from a snapshot)', async () => {
    const { tasks, state } = instantTaskService({ listedNodes: () => [] });
    const { task } = await tasks.submit({ model, prompt: 'watched from a node that was frozen' });
    const seen: string[] = [];
    const watching = (async () => {
      for await (const event of tasks.events(task.id, AbortSignal.timeout(5_000))) seen.push(event.type === 'final' ? `final:${event.task.status}` : event.type);
    })();
    await new Promise((resolve) => setTimeout(resolve, 50));
    // The cancel reaches this node inside a snapshot: the state changes, no event is published.
    state.apply(state.lastApplied + 1, encodeCommand({ type: 'task.cancel', id: task.id, at: Date.now(), reason: 'cancelled elsewhere' }));
    await watching;
    expect(seen.at(-1)).toBe('final:cancelled');
  });
});

describe('a write committed while this node lags behind the log', () => {
  const lagging = async () => { throw new HivemeshError(ErrorCode.unavailable, 'this node did not catch up to index 7 within 3000 ms'); };

  it('answers a submit with the leader\'s view of the task, not a 503 that would invite a second task', async () => {
    const { tasks, state } = instantTaskService({ listedNodes: () => listed, waitApplied: lagging });
    const { task, created } = await tasks.submit({ model, prompt: 'accepted while lagging' });
    expect(created).toBe(true);
    expect(state.getTask(task.id)?.status).toBe('queued');
  });

  it('says the write is not lost when the leader left the task out of its answer', async () => {
    const state = new ReplicatedState();
    const { tasks } = instantTaskService({
      listedNodes: () => listed, waitApplied: lagging, state: () => state,
      propose: async (data) => {
        const result = state.apply(state.lastApplied + 1, data);
        return result.ok ? { ...result, task: null } : result;
      },
    });
    state.apply(1, encodeCommand({ type: 'task.submit', id: 't_lag', input: validInput(), at: 1, idempotencyKey: null, bodyHash: 'h' }));
    const error = await refusal(tasks.cancel('t_lag'));
    expect(error.code).toBe('unavailable');
    expect(error.message).toMatch(/^the task\.cancel of task t_lag was committed \(log index 2\), but this node has not caught up to it yet \(this node did not catch up to index 7 within 3000 ms\); it is not lost/);
    expect(state.getTask('t_lag')?.status).toBe('cancelled');
  });

  it('shows a token created through a lagging node its secret all the same', async () => {
    const state = new ReplicatedState();
    const tokens = new TokenService({ state: () => state, propose: async (data) => state.apply(state.lastApplied + 1, data), waitApplied: lagging });
    const created = await tokens.create('viewer', 'dashboard');
    expect(created).toMatchObject({ name: 'dashboard', role: 'viewer', revokedAt: null });
    expect(created.token.length).toBeGreaterThan(20);
    expect(state.getToken(created.id)?.hash).toBe(hashToken(created.token));
    const error = await refusal(tokens.revoke(created.id));
    expect(error.message).toMatch(/^the token\.revoke was committed .* it is not lost/);
  });
});
