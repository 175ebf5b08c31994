// Task routes on the real fastify app: a DELETE with a JSON content type and no body is
// served; a node with every event stream taken answers 429 with Retry-After before a
// stream starts (not an accepted stream that errors).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, HivemeshError } from '../../../protocol/errors.ts';
import { EventBus, subscribersMax } from '../../events.ts';
import type { TaskService } from '../../tasks/service.ts';
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
