// Token routes on the real fastify app: GET /api/tokens/self tells any valid token its own
// role and what that role may do; the management routes beside it stay admin only.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { can, type TokenSelf } from '../../../protocol/tokens.ts';
import type { TokenService } from '../../tokens.ts';
import { buildApp, type App } from '../app.ts';
import type { HttpServices, Principal } from '../services.ts';
import { tokenRoutes } from './tokens.ts';

const principals: Record<string, Principal> = {
  'admin-token': { tokenId: 'local-admin', name: 'admin@atlas', role: 'admin' },
  'operator-token': { tokenId: 'tok_operator', name: 'ci', role: 'operator' },
  'viewer-token': { tokenId: 'tok_viewer', name: 'wall', role: 'viewer' },
};
let app: App;

beforeAll(async () => {
  const services: HttpServices = {
    nodeId: 'self',
    authenticate: (token) => principals[token] ?? null,
    can,
    readiness: () => ({ ready: true, leaderId: 'self' }),
    clusterStatus: () => { throw new Error('not used'); },
    agentsStatus: () => { throw new Error('not used'); },
    reportInternalError: () => undefined,
  };
  const tokens = { list: () => [] } as unknown as TokenService;
  app = await buildApp({ services, plugins: [tokenRoutes(tokens)] });
});

afterAll(async () => {
  await app.close();
});

const get = (url: string, token: string | null) =>
  app.inject({ method: 'GET', url, headers: token === null ? {} : { authorization: `Bearer ${token}` } });

describe('GET /api/tokens/self', () => {
  it('answers each role with who the token is and exactly what it may do', async () => {
    const answers: Record<string, TokenSelf> = {};
    for (const token of Object.keys(principals)) {
      const response = await get('/api/tokens/self', token);
      expect(response.statusCode, response.body).toBe(200);
      answers[token] = response.json();
    }
    expect(answers['admin-token']).toEqual({ id: 'local-admin', name: 'admin@atlas', role: 'admin', actions: ['read', 'submit', 'cancel', 'assign', 'manageTokens', 'administer'] });
    expect(answers['operator-token']).toEqual({ id: 'tok_operator', name: 'ci', role: 'operator', actions: ['read', 'submit', 'cancel', 'assign'] });
    expect(answers['viewer-token']).toEqual({ id: 'tok_viewer', name: 'wall', role: 'viewer', actions: ['read'] });
  });

  it('needs a valid token, like every other API route', async () => {
    expect((await get('/api/tokens/self', null)).statusCode).toBe(401);
    const wrong = await get('/api/tokens/self', 'not-a-token');
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json().error.code).toBe('unauthorized');
  });

  it('leaves the token list and revocation to admins', async () => {
    expect((await get('/api/tokens', 'viewer-token')).statusCode).toBe(403);
    expect((await get('/api/tokens', 'operator-token')).statusCode).toBe(403);
    expect((await get('/api/tokens', 'admin-token')).statusCode).toBe(200);
    // "self" is no id the DELETE route treats specially: it is still a management action.
    const revoke = await app.inject({ method: 'DELETE', url: '/api/tokens/self', headers: { authorization: 'Bearer viewer-token' } });
    expect(revoke.statusCode).toBe(403);
  });
});
