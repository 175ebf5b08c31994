// Task routes on the real fastify app: a DELETE with a JSON content type and no body is
// served; a node with every event stream taken answers 429 with Retry-After before a
// stream starts (not an accepted stream that errors); a pin finds the node in the node
// list GET /api/status/agents shows, and refuses a dead one as dead.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeStatus } from '../../../protocol/api.ts';
import { ErrorCode, HivemeshError } from '../../../protocol/errors.ts';
import type { Task } from '../../../protocol/tasks.ts';
import { EventBus, subscribersMax } from '../../events.ts';
import { unheardNodeStatus } from '../../membership/unheard-node.ts';
import type { TaskService } from '../../tasks/service.ts';
import { instantTaskService } from '../../tasks/test-harness.ts';
import { buildApp, type App } from '../app.ts';
import type { HttpServices } from '../services.ts';
import { taskRoutes } from './tasks.ts';

const bus = new EventBus();
const held = new AbortController();
let app: App;

beforeAll(async () => {
  const services: HttpServices = {
    nodeId: 'self',
    authenticate: (token) => (token === 'viewer' ? { tokenId: 'v', name: 'viewer', role: 'viewer' } : token === 'operator' ? { tokenId: 'o', name: 'operator', role: 'operator' } : null),
    can: (role, action) => action === 'read' || role === 'operator',
    readiness: () => ({ ready: true, leaderId: 'self' }),
    clusterStatus: () => { throw new Error('not used'); },
    agentsStatus: () => { throw new Error('not used'); },
    reportInternalError: () => undefined,
  };
  const tasks = {
    find: async () => ({ id: 't_1' }),
    cancel: async (id: string) => { throw new HivemeshError(ErrorCode.notFound, `no task ${id} (cancel reached)`); },
  } as unknown as TaskService;
  app = await buildApp({ services, plugins: [taskRoutes(tasks, bus)] });
  // Every stream this node allows, held open.
  for (let n = 0; n < subscribersMax; n += 1) void bus.subscribe(held.signal).next();
  await new Promise((resolve) => setImmediate(resolve));
});

afterAll(async () => {
  held.abort();
  await app.close();
});

describe('bodiless requests', () => {
  it('take a DELETE with content-type application/json and no body as what it is: no body', async () => {
    const response = await app.inject({ method: 'DELETE', url: '/api/tasks/t_1', headers: { authorization: 'Bearer operator', 'content-type': 'application/json' } });
    // The route ran (the fake service answers 404), instead of a 400 for an "empty JSON body".
    expect(response.statusCode, response.body).toBe(404);
    expect(response.json().error.message).toBe('no task t_1 (cancel reached)');
  });
});

describe('event stream routes', () => {
  it('answer 429 with Retry-After when every event stream of the node is taken', async () => {
    expect(bus.full).toBe(true);
    for (const url of ['/api/events', '/api/tasks/t_1/events']) {
      const response = await app.inject({ method: 'GET', url, headers: { authorization: 'Bearer viewer' } });
      expect(response.statusCode, url).toBe(429);
      expect(response.headers['retry-after']).toBe('5');
      expect(response.json().error).toMatchObject({ code: 'rate_limited', message: expect.stringMatching(/over 1000 event streams are open on this node/) });
    }
  });
});

describe('PUT /api/tasks/:id/assign', () => {
  /** A node list entry; only id, name, state and last seen matter to a pin. */
  function listedNode(id: string, name: string, state: NodeStatus['state'], lastSeenAgoMs: number, neverHeard = false): NodeStatus {
    const status = unheardNodeStatus({ nodeId: id, state, self: false, lastSeenMs: Date.now() - lastSeenAgoMs, heartbeat: null, clockOffsetMs: 0 }, 'follower', 'c1', Date.now());
    if (neverHeard) return status;
    const { neverHeard: _omitted, ...heard } = status;
    return { ...heard, name };
  }

  it('refuses a pin to a node `hivemesh nodes` lists dead (409, saying so) and answers a pin to a node without the model with why the task waits', async () => {
    const nodes = [listedNode('id-op1', 'op1', 'alive', 0), listedNode('id-op2', 'op2', 'dead', 125_000), listedNode('id-gone', 'id-gone', 'dead', 10_000, true)];
    const services: HttpServices = {
      nodeId: 'id-op1',
      authenticate: (token) => (token === 'operator' ? { tokenId: 'o', name: 'operator', role: 'operator' } : null),
      can: () => true,
      readiness: () => ({ ready: true, leaderId: 'id-op1' }),
      clusterStatus: () => { throw new Error('not used'); },
      agentsStatus: () => ({ nodes }),
      reportInternalError: () => undefined,
    };
    // Built as the daemon builds it: the pin resolves against the node list GET /api/status/agents shows.
    const { tasks } = instantTaskService({
      listedNodes: () => nodes,
      nodeViews: () => [{ id: 'id-op1', alive: true, modelsInstalled: ['llama3.2:1b'], modelsLoaded: [], tokensPerSecond: {}, running: 0, concurrencyLimit: 2, agents: [] }],
    });
    const pinApp = await buildApp({ services, plugins: [taskRoutes(tasks, new EventBus())] });
    try {
      const { task } = await tasks.submit({ model: 'mistral:7b', prompt: 'hello' });
      const pin = (node: string) => pinApp.inject({ method: 'PUT', url: `/api/tasks/${task.id}/assign`, headers: { authorization: 'Bearer operator' }, payload: { node } });
      const dead = await pin('op2');
      expect(dead.statusCode, dead.body).toBe(409);
      expect(dead.json().error).toEqual({
        code: 'conflict',
        message: 'node op2 (id-op2) is dead (last seen 125 s ago); a task pinned to it would wait until it comes back. Pin to an alive node: `hivemesh nodes` lists them',
        details: { node: 'id-op2', state: 'dead' },
      });
      const unheard = await pin('id-gone');
      expect(unheard.statusCode, unheard.body).toBe(409);
      expect(unheard.json().error.message).toMatch(/^node id-gone is dead \(never heard from by this node\)/);
      expect((await pin('nope')).json().error.message).toBe('node: no node "nope" is known; `hivemesh nodes` lists ids and names');
      const pinned = await pin('op1');
      expect(pinned.statusCode, pinned.body).toBe(200);
      expect(pinned.json<Task>()).toMatchObject({ pinnedNode: 'id-op1', waitingFor: 'pinned to node id-op1, which lacks model mistral:7b' });
    } finally {
      await pinApp.close();
    }
  });
});
