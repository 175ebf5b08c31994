// The gateway routes on the real fastify app (inject, no port) with a gateway whose only
// node is this one, on an Ollama stand-in: roles, the 429 bound with Retry-After, every
// error in the client's own shape, the legacy body forms Ollama accepts, and the lists.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentsStatus, NodeStatus } from '../../protocol/api.ts';
import { startStandin, type Standin } from '../../tests/ollama-standin/server.ts';
import { buildApp, type App } from '../http/app.ts';
import type { HttpServices } from '../http/services.ts';
import { MetricsRegistry } from '../metrics/registry.ts';
import { Gateway, type GatewayHost } from './gateway.ts';
import { gatewayRoutes } from './routes.ts';
import { embeddingsAsBase64 } from './shapes.ts';
import { OriginPolicy, originPatternProblem } from './cors.ts';

const model = 'llama3.2:1b';
const embedModel = 'all-minilm';
const tokens: Record<string, 'viewer' | 'operator'> = { 'viewer-token': 'viewer', 'operator-token': 'operator' };

// A single-node cluster: nothing is relayed, so the host is never asked.
const host: GatewayHost = {
  handle: async () => undefined,
  request: () => {
    throw new Error('no peer in this test');
  },
};

function selfNode(ollamaVersion: string | null, installed: string[]): NodeStatus {
  return {
    id: 'self', name: 'self', apiUrl: '', state: 'alive', raftRole: 'leader', self: true, clusterId: 'c', softwareVersion: '0', protocolVersion: 1,
    startedAt: '2026-11-22T00:00:00.000Z',
    hardware: { cpu: { model: '', cores: 1, load: 0 }, memory: { totalBytes: 0, usedBytes: 0 }, gpus: [] },
    ollama: { url: '', reachable: ollamaVersion !== null, version: ollamaVersion, error: null },
    models: { installed: installed.map((name) => ({ name, sizeBytes: 5 })), loaded: [], tokensPerSecond: {} },
    load: { running: 0, queued: 0, concurrencyLimit: 2 }, agents: [], capabilities: [], lastSeen: '', lastSeenAgoMs: 0,
  };
}

let standin: Standin;
let agents: AgentsStatus;
let inFlightMax = 256;

async function appWith(options: { stopDrainMs?: number } = {}): Promise<App> {
  const services: HttpServices = {
    nodeId: 'self',
    authenticate: (token) => (tokens[token] === undefined ? null : { tokenId: token, name: token, role: tokens[token]! }),
    can: (role, action) => action === 'read' || role === 'operator',
    readiness: () => ({ ready: true, leaderId: 'self' }),
    clusterStatus: () => { throw new Error('not used'); },
    agentsStatus: () => agents,
    reportInternalError: () => undefined,
  };
  const gateway = new Gateway({
    host, nodeId: () => 'self', ollamaUrl: standin.url, metrics: new MetricsRegistry(),
    nodeViews: () => [{ id: 'self', alive: true, modelsInstalled: [model, embedModel], modelsLoaded: [], tokensPerSecond: {}, running: 0, concurrencyLimit: 2, agents: [] }],
    get requestsInFlightMax() {
      return inFlightMax;
    },
  });
  return buildApp({ services, plugins: [gatewayRoutes({ gateway, agentsStatus: () => agents, origins: new OriginPolicy(['https://app.example.com']), ...options })] });
}

let app: App;
beforeAll(async () => {
  standin = await startStandin({ models: [model, embedModel], tokensPerSecond: 1000, coldLoadMs: 0, responseTokens: 4 });
  agents = { nodes: [selfNode('0.12.6', [model, embedModel])] };
  app = await appWith();
});
afterAll(async () => {
  await app.close();
  await standin.close();
});

const auth = (token: string) => ({ authorization: `Bearer ${token}` });

describe('gateway routes', () => {
  it('lets pages of allowed origins call it from a browser, as Ollama does, and tells others what to do', async () => {
    for (const origin of ['http://localhost:3000', 'http://127.0.0.1', 'chrome-extension://abcdef', 'https://app.example.com']) {
      const preflight = await app.inject({ method: 'OPTIONS', url: '/v1/chat/completions', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, x-stainless-os' } });
      expect([origin, preflight.statusCode]).toEqual([origin, 204]);
      expect(preflight.headers['access-control-allow-origin']).toBe(origin);
      expect(preflight.headers['access-control-allow-headers']).toBe('authorization, content-type, x-stainless-os');
      expect(String(preflight.headers['access-control-allow-methods'])).toContain('POST');
    }
    const ollamaPreflight = await app.inject({ method: 'OPTIONS', url: '/api/chat', headers: { origin: 'http://localhost:8080', 'access-control-request-method': 'POST' } });
    expect(ollamaPreflight.statusCode).toBe(204);

    // The answers carry the header, refusals included, so a page can read why.
    const origin = 'http://localhost:3000';
    const tags = await app.inject({ method: 'GET', url: '/api/tags', headers: { ...auth('viewer-token'), origin } });
    expect(tags.headers['access-control-allow-origin']).toBe(origin);
    expect(tags.headers.vary).toMatch(/Origin/);
    const refused = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: { origin }, payload: { model, messages: [] } });
    expect(refused.statusCode).toBe(401);
    expect(refused.headers['access-control-allow-origin']).toBe(origin);
    const generated = await app.inject({ method: 'POST', url: '/api/generate', headers: { ...auth('operator-token'), origin }, payload: { model, prompt: 'x', stream: false } });
    expect(generated.statusCode).toBe(200);
    expect(generated.headers['access-control-allow-origin']).toBe(origin);

    // Another site: no header, and its preflight says how to allow it.
    const stranger = 'https://evil.example.net';
    const strangerPreflight = await app.inject({ method: 'OPTIONS', url: '/v1/embeddings', headers: { origin: stranger, 'access-control-request-method': 'POST' } });
    expect(strangerPreflight.statusCode).toBe(403);
    expect(strangerPreflight.json().error.message).toContain(`--allow-origin ${stranger}`);
    expect(strangerPreflight.headers['access-control-allow-origin']).toBeUndefined();
    const strangerTags = await app.inject({ method: 'GET', url: '/api/tags', headers: { ...auth('viewer-token'), origin: stranger } });
    expect(strangerTags.statusCode).toBe(200);
    expect(strangerTags.headers['access-control-allow-origin']).toBeUndefined();
    // Only the gateway's routes: hivemesh's own API stays same-origin (its dashboard).
    expect((await app.inject({ method: 'OPTIONS', url: '/api/tasks', headers: { origin, 'access-control-request-method': 'POST' } })).statusCode).toBe(404);
  });

  it('reads origin patterns as Ollama\'s OLLAMA_ORIGINS does', () => {
    const policy = new OriginPolicy(['http://10.0.0.*:3000', 'https://*.example.org']);
    expect(policy.allows('http://10.0.0.7:3000')).toBe(true);
    expect(policy.allows('http://10.0.0.7:3001')).toBe(false);
    expect(policy.allows('https://ui.example.org')).toBe(true);
    expect(policy.allows('https://example.org.evil.net')).toBe(false);
    expect(policy.allows('http://localhost')).toBe(true);
    expect(policy.allows('http://localhost.evil.net')).toBe(false);
    expect(new OriginPolicy(['*']).allows('https://anything.example')).toBe(true);
    expect(originPatternProblem('https://app.example.com')).toBeNull();
    expect(originPatternProblem('app.example.com')).toMatch(/not an origin; use the form/);
    expect(originPatternProblem('https://app.example.com/path')).toMatch(/not an origin/);
  });

  it('gives OpenAI embeddings as base64 float32 when asked (the OpenAI clients\' default), as numbers otherwise', async () => {
    const input = ['first text', 'second text'];
    const floats = await app.inject({ method: 'POST', url: '/v1/embeddings', headers: auth('operator-token'), payload: { model: embedModel, input } });
    expect(floats.statusCode).toBe(200);
    const numbers = (floats.json() as { data: Array<{ embedding: number[] }> }).data.map((item) => item.embedding);
    expect(numbers).toHaveLength(2);
    expect(typeof numbers[0]![0]).toBe('number');

    const encoded = await app.inject({ method: 'POST', url: '/v1/embeddings', headers: auth('operator-token'), payload: { model: embedModel, input, encoding_format: 'base64' } });
    expect(encoded.statusCode).toBe(200);
    const answer = encoded.json() as { object: string; model: string; data: Array<{ object: string; index: number; embedding: string }>; usage: unknown };
    expect(answer).toMatchObject({ object: 'list', data: [{ object: 'embedding', index: 0 }, { object: 'embedding', index: 1 }] });
    expect(answer.usage).toBeDefined();
    // Decoded as the OpenAI clients do: little-endian float32.
    const decoded = answer.data.map((item) => {
      const bytes = Buffer.from(item.embedding, 'base64');
      return Array.from({ length: bytes.length / 4 }, (_, index) => bytes.readFloatLE(index * 4));
    });
    expect(decoded.map((vector) => vector.length)).toEqual(numbers.map((vector) => vector.length));
    decoded.forEach((vector, row) => vector.forEach((value, column) => expect(value).toBeCloseTo(numbers[row]![column]!, 6)));
  });

  it('leaves embeddings alone that are strings already, or an answer it does not know', () => {
    const already = JSON.stringify({ object: 'list', data: [{ object: 'embedding', index: 0, embedding: 'AACAPw==' }] });
    expect(JSON.parse(embeddingsAsBase64(already)!)).toEqual(JSON.parse(already));
    expect(embeddingsAsBase64('not json')).toBeNull();
    expect(embeddingsAsBase64(JSON.stringify({ error: 'x' }))).toBeNull();
    expect(embeddingsAsBase64(JSON.stringify({ data: [{ embedding: [1, 'x'] }] }))).toBeNull();
    expect(Buffer.from((JSON.parse(embeddingsAsBase64(JSON.stringify({ data: [{ embedding: [1] }] }))!) as { data: Array<{ embedding: string }> }).data[0]!.embedding, 'base64')).toEqual(Buffer.from([0, 0, 0x80, 0x3f]));
  });

  it('lets a viewer list but not generate, answering in the client\'s shape', async () => {
    const tags = (await app.inject({ method: 'GET', url: '/api/tags', headers: auth('viewer-token') })).json() as { models: Array<{ name: string }> };
    expect(tags.models.map((entry) => entry.name).sort()).toEqual(['all-minilm:latest', model].sort());
    const ollama = await app.inject({ method: 'POST', url: '/api/generate', headers: auth('viewer-token'), payload: { model, prompt: 'x' } });
    expect(ollama.statusCode).toBe(403);
    expect(typeof ollama.json().error).toBe('string');
    const openai = await app.inject({ method: 'POST', url: '/v1/completions', headers: auth('viewer-token'), payload: { model, prompt: 'x' } });
    expect(openai.statusCode).toBe(403);
    expect(openai.json().error).toMatchObject({ type: 'permission_error', code: 'forbidden' });
  });

  it('generates for an operator, with the answering node named, from a body sent without a JSON content type', async () => {
    const response = await app.inject({ method: 'POST', url: '/api/generate', headers: { ...auth('operator-token'), 'content-type': 'application/x-www-form-urlencoded' }, payload: JSON.stringify({ model, prompt: 'x', stream: false }) });
    expect(response.statusCode).toBe(200);
    expect(response.headers['x-hivemesh-node']).toBe('self');
    expect(response.json()).toMatchObject({ model, done: true, eval_count: 4 });
    const show = await app.inject({ method: 'POST', url: '/api/show', headers: auth('viewer-token'), payload: { name: model } });
    expect(show.statusCode).toBe(200);
    expect(show.json().capabilities).toContain('completion');
  });

  it('refuses beyond the in-flight bound with 429 and Retry-After', async () => {
    inFlightMax = 0;
    try {
      const ollama = await app.inject({ method: 'POST', url: '/api/chat', headers: auth('operator-token'), payload: { model, messages: [] } });
      expect(ollama.statusCode).toBe(429);
      expect(ollama.headers['retry-after']).toBe('1');
      expect(ollama.json().error).toMatch(/limit/);
      const openai = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: auth('operator-token'), payload: { model, messages: [] } });
      expect(openai.statusCode).toBe(429);
      expect(openai.json().error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limited' });
    } finally {
      inFlightMax = 256;
    }
  });

  it('answers routes it does not serve in the client\'s shape, saying what to do', async () => {
    const pull = await app.inject({ method: 'POST', url: '/api/pull', headers: auth('viewer-token'), payload: { model } });
    expect(pull.statusCode).toBe(404);
    expect(pull.json()).toEqual({ error: expect.stringMatching(/ollama pull MODEL/) });
    const remove = await app.inject({ method: 'DELETE', url: '/api/delete', headers: auth('viewer-token'), payload: { model } });
    expect(remove.json()).toEqual({ error: expect.stringMatching(/does not manage models/) });
    const responses = await app.inject({ method: 'POST', url: '/v1/responses', headers: auth('viewer-token'), payload: { model } });
    expect(responses.statusCode).toBe(404);
    expect(responses.json()).toMatchObject({ error: { message: expect.stringMatching(/\/v1\/chat\/completions/), type: expect.any(String) } });
    // A served path with the wrong method is named with that method, not left to read as missing.
    const wrongMethod = await app.inject({ method: 'GET', url: '/v1/chat/completions?x=1', headers: auth('viewer-token') });
    expect(wrongMethod.statusCode).toBe(404);
    expect(wrongMethod.json().error.message).toMatch(/^Invalid URL \(GET \/v1\/chat\/completions\): hivemesh serves POST \/v1\/chat\/completions, /);
    // An OpenAI client whose base URL lacks /v1 is told the base URL, in OpenAI's shape.
    for (const [method, url] of [['POST', '/chat/completions'], ['GET', '/models'], ['POST', '/api/chat/completions'], ['GET', '/api/models/llama3.2:1b']] as const) {
      const noV1 = await app.inject({ method, url, headers: { ...auth('viewer-token'), host: 'gpu-box:7420' }, ...(method === 'POST' ? { payload: { model } } : {}) });
      expect(noV1.statusCode).toBe(404);
      expect(noV1.json().error).toMatchObject({ type: 'invalid_request_error', message: `Invalid URL (${method} ${url}): give OpenAI clients the base URL http://gpu-box:7420/v1 (the OpenAI API is under /v1 here)` });
    }
    // Served routes still answer.
    expect((await app.inject({ method: 'GET', url: '/v1/models', headers: auth('viewer-token') })).statusCode).toBe(200);
  });

  it('says what is wrong with a body: not an object, no model', async () => {
    const array = await app.inject({ method: 'POST', url: '/api/chat', headers: { ...auth('operator-token'), 'content-type': 'application/json' }, payload: '[1]' });
    expect(array.statusCode).toBe(400);
    expect(array.json()).toEqual({ error: 'the request body must be a JSON object' });
    const noModel = await app.inject({ method: 'POST', url: '/v1/embeddings', headers: auth('operator-token'), payload: { input: 'x' } });
    expect(noModel.statusCode).toBe(400);
    expect(noModel.json().error).toMatchObject({ type: 'invalid_request_error', code: 'missing_model' });
  });

  it('answers /api/version from a reachable Ollama, 503 while none is', async () => {
    expect((await app.inject({ method: 'GET', url: '/api/version', headers: auth('viewer-token') })).json()).toEqual({ version: '0.12.6' });
    agents = { nodes: [selfNode(null, [model])] };
    try {
      const down = await app.inject({ method: 'GET', url: '/api/version', headers: auth('viewer-token') });
      expect(down.statusCode).toBe(503);
      expect(down.headers['retry-after']).toBe('5');
      expect(down.json().error).toMatch(/no Ollama/);
      // An unreachable Ollama's models are not offered.
      expect((await app.inject({ method: 'GET', url: '/v1/models', headers: auth('viewer-token') })).json()).toEqual({ object: 'list', data: [] });
      // A model not found then says whose Ollama is down, since the model may be there.
      const missing = await app.inject({ method: 'POST', url: '/api/chat', headers: auth('operator-token'), payload: { model: 'absent:1b', messages: [] } });
      expect(missing.statusCode).toBe(404);
      expect(missing.json().error).toBe('model "absent:1b" not found, try pulling it first (the Ollama of self does not answer, so that node\'s models are not counted; `hivemesh nodes` shows each node\'s Ollama)');
    } finally {
      agents = { nodes: [selfNode('0.12.6', [model, embedModel])] };
    }
  });

  it('cuts the answers still streaming after a short drain when the node stops, instead of holding the stop', async () => {
    const stopping = await appWith({ stopDrainMs: 200 });
    const address = await stopping.listen({ host: '127.0.0.1', port: 0 });
    // About 100 s of tokens at the stand-in's speed.
    const response = await fetch(`${address}/api/generate`, {
      method: 'POST', headers: auth('operator-token'), body: JSON.stringify({ model, prompt: 'long', options: { num_predict: 100_000 } }),
    });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    await reader.read();
    const startedAt = Date.now();
    const closed = stopping.close();
    // The client sees a broken answer, not one that ends as if it were whole.
    const outcome = await (async () => {
      try {
        for (;;) if ((await reader.read()).done) return 'ended';
      } catch {
        return 'broken';
      }
    })();
    expect(outcome).toBe('broken');
    await closed;
    expect(Date.now() - startedAt).toBeLessThan(3_000);
  }, 20_000);
});
