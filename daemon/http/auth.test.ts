// Authentication at the HTTP edge: a token this node does not know yet is looked up again
// after the node catches up with the leader (a token created through another node a moment
// ago), and only then refused.
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp, type App } from './app.ts';
import type { HttpServices, Principal } from './services.ts';

let app: App | null = null;
afterEach(async () => {
  await app?.close();
  app = null;
});

function services(overrides: Partial<HttpServices>): HttpServices {
  return {
    nodeId: 'n1',
    authenticate: () => null,
    can: () => true,
    readiness: () => ({ ready: true, leaderId: 'n1' }),
    clusterStatus: () => ({
      clusterId: 'c1', nodeId: 'n1', nodeName: 'one', leaderId: 'n1', term: 1, commitIndex: 1, appliedIndex: 1, role: 'leader',
      voters: ['n1'], learners: [], nodes: { alive: 1, suspect: 0, dead: 0, total: 1 },
      tasks: { queued: 0, assigned: 0, running: 0, completed: 0, failed: 0, cancelled: 0, total: 0 },
      softwareVersion: '0', protocolVersion: 1, clusterKeyFingerprint: '', listenAddresses: [], alerts: [],
    }),
    agentsStatus: () => ({ nodes: [] }),
    reportInternalError: () => undefined,
    ...overrides,
  };
}

describe('authentication', () => {
  it('accepts a token this node learns of once it has caught up with the leader, and refuses one still unknown', async () => {
    const known = new Set<string>();
    const caughtUp: string[] = [];
    const viewer = (token: string): Principal | null => (known.has(token) ? { tokenId: token, name: token, role: 'viewer' } : null);
    app = await buildApp({
      services: services({
        authenticate: viewer,
        // The token committed elsewhere arrives with the catch-up.
        authenticateAfterCatchUp: async (token) => {
          caughtUp.push(token);
          if (token === 'fresh') known.add(token);
          return viewer(token);
        },
      }),
    });
    const status = (token: string) => app!.inject({ method: 'GET', url: '/api/status/cluster', headers: { authorization: `Bearer ${token}` } });
    expect((await status('fresh')).statusCode).toBe(200);
    // Known now: no second catch-up.
    expect((await status('fresh')).statusCode).toBe(200);
    const unknown = await status('never-made');
    expect(unknown.statusCode).toBe(401);
    expect(unknown.json().error.message).toMatch(/not valid on this cluster/);
    expect(caughtUp).toEqual(['fresh', 'never-made']);
  });
});
