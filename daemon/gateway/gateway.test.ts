// The gateway engine over two real libp2p hosts on loopback, each node with an Ollama
// stand-in: placement order, the second try when the first node fails before answering,
// the entry and inbound bounds, the relay's path allowlist, in-flight counting and abort
// propagation; and the pure shapes (model union, loaded models, work shapes).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeStatus } from '../../protocol/api.ts';
import type { NodeView } from '../../scheduler/tasks/node-view.ts';
import { startStandin, type Standin } from '../../tests/ollama-standin/server.ts';
import { MetricsRegistry } from '../metrics/registry.ts';
import type { P2PHost } from '../p2p/host.ts';
import { loopbackAddress, newClusterKey, startLoopbackHost, waitFor } from '../p2p/test-helpers.ts';
import { GATEWAY_PROTOCOL, Gateway, GatewayBusyError, ModelNotFoundError, UpstreamUnavailableError, type GatewayCall, type GatewayResponse } from './gateway.ts';
import { clusterModels, ollamaPs, ollamaTags, openaiModels, workShapeOfRequest } from './shapes.ts';

const model = 'llama3.2:1b';

function view(id: string, options: Partial<NodeView> = {}): NodeView {
  return { id, alive: true, modelsInstalled: [model], modelsLoaded: [], tokensPerSecond: {}, running: 0, concurrencyLimit: 2, agents: [], ...options };
}

async function drain(response: GatewayResponse): Promise<string> {
  let text = '';
  const decoder = new TextDecoder();
  try {
    for await (const chunk of response.body) text += decoder.decode(chunk, { stream: true });
  } finally {
    response.release();
  }
  return text;
}

function chatCall(signal: AbortSignal = AbortSignal.timeout(10_000), numPredict?: number): GatewayCall {
  const body = { model, messages: [{ role: 'user', content: 'hi' }], stream: true, ...(numPredict === undefined ? {} : { options: { num_predict: numPredict } }) };
  return { path: '/api/chat', method: 'POST', body, work: workShapeOfRequest('/api/chat', body, model), signal };
}

describe('Gateway over two loopback hosts', () => {
  let hostA: P2PHost;
  let hostB: P2PHost;
  let standinA: Standin;
  let standinB: Standin;
  const stoppers: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    const key = newClusterKey();
    hostA = await startLoopbackHost(key);
    hostB = await startLoopbackHost(key);
    await hostA.connect(loopbackAddress(hostB));
    standinA = await startStandin({ models: [model], tokensPerSecond: 500, coldLoadMs: 10 });
    standinB = await startStandin({ models: [model], tokensPerSecond: 500, coldLoadMs: 10 });
    stoppers.push(() => hostA.stop(), () => hostB.stop(), () => standinA.close(), () => standinB.close());
  }, 20_000);

  afterAll(async () => {
    for (const stop of stoppers) await stop();
  });

  async function gatewayOn(host: P2PHost, ollamaUrl: string, views: () => NodeView[], options: { requestsInFlightMax?: number; inboundRelaysMax?: number } = {}): Promise<Gateway> {
    const gateway = new Gateway({ host, nodeId: () => host.peerId, ollamaUrl, nodeViews: views, metrics: new MetricsRegistry(), ...options });
    await gateway.start();
    return gateway;
  }

  // One protocol handler per host: the B side is started once and shared by the cases.
  let gatewayB: Gateway;
  let inboundLimitB = 256;
  beforeAll(async () => {
    gatewayB = new Gateway({
      host: hostB, nodeId: () => hostB.peerId, ollamaUrl: standinB.url, nodeViews: () => [], metrics: new MetricsRegistry(),
      get inboundRelaysMax() {
        return inboundLimitB;
      },
    });
    await gatewayB.start();
  });

  it('sends the request to the best-ranked node, relayed, and counts it there while it runs', async () => {
    // B has the model in VRAM: it ranks first.
    const gateway = new Gateway({ host: hostA, nodeId: () => hostA.peerId, ollamaUrl: standinA.url, nodeViews: () => [view(hostA.peerId), view(hostB.peerId, { modelsLoaded: [model] })], metrics: new MetricsRegistry() });
    const startedOnB = standinB.generationsTotal();
    const response = await gateway.open(chatCall(AbortSignal.timeout(10_000), 200));
    expect(response.nodeId).toBe(hostB.peerId);
    expect(response.status).toBe(200);
    expect(response.contentType).toMatch(/ndjson/);
    expect(gatewayB.inFlight()).toBe(1);
    const text = await drain(response);
    const lines = text.trim().split('\n').map((line) => JSON.parse(line) as { done: boolean });
    expect(lines).toHaveLength(201);
    expect(lines.at(-1)!.done).toBe(true);
    expect(standinB.generationsTotal() - startedOnB).toBe(1);
    await waitFor('B to count the generation finished', () => gatewayB.inFlight() === 0);
  });

  it('tries the next node when the first fails before answering', async () => {
    // A ranks first (model loaded) but its Ollama is down; B answers.
    const gateway = await gatewayOn(hostA, 'http://127.0.0.1:9', () => [view(hostA.peerId, { modelsLoaded: [model] }), view(hostB.peerId)]);
    const response = await gateway.open(chatCall());
    expect(response.nodeId).toBe(hostB.peerId);
    expect(await drain(response)).toContain('"done":true');
    expect(gateway.inFlight()).toBe(0);
  });

  it('fails with the reasons when no node tried can answer, and 404s a model nobody has', async () => {
    const gateway = new Gateway({ host: hostA, nodeId: () => hostA.peerId, ollamaUrl: 'http://127.0.0.1:9', nodeViews: () => [view(hostA.peerId)], metrics: new MetricsRegistry() });
    await expect(gateway.open(chatCall())).rejects.toThrow(UpstreamUnavailableError);
    await expect(gateway.open(chatCall())).rejects.toThrow(/did not answer/);
    const none = new Gateway({ host: hostA, nodeId: () => hostA.peerId, ollamaUrl: standinA.url, nodeViews: () => [view(hostA.peerId, { modelsInstalled: ['other:1b'] }), view(hostB.peerId, { alive: false })], metrics: new MetricsRegistry() });
    await expect(none.open(chatCall())).rejects.toThrow(ModelNotFoundError);
  });

  it('refuses past its in-flight bound as entry node, and frees the slot when the response ends', async () => {
    const gateway = new Gateway({ host: hostA, nodeId: () => hostA.peerId, ollamaUrl: standinA.url, nodeViews: () => [view(hostA.peerId)], metrics: new MetricsRegistry(), requestsInFlightMax: 1 });
    const first = await gateway.open(chatCall());
    expect(gateway.inFlight()).toBe(1);
    await expect(gateway.open(chatCall())).rejects.toThrow(GatewayBusyError);
    await drain(first);
    expect(gateway.inFlight()).toBe(0);
    await drain(await gateway.open(chatCall()));
  });

  it('a peer at its inbound bound is skipped as busy; with no other node the client is told to retry', async () => {
    inboundLimitB = 0;
    try {
      const gateway = new Gateway({ host: hostA, nodeId: () => hostA.peerId, ollamaUrl: standinA.url, nodeViews: () => [view(hostB.peerId, { modelsLoaded: [model] }), view(hostA.peerId)], metrics: new MetricsRegistry() });
      const response = await gateway.open(chatCall());
      expect(response.nodeId).toBe(hostA.peerId);
      await drain(response);
      const onlyB = new Gateway({ host: hostA, nodeId: () => hostA.peerId, ollamaUrl: standinA.url, nodeViews: () => [view(hostB.peerId)], metrics: new MetricsRegistry() });
      await expect(onlyB.open(chatCall())).rejects.toThrow(GatewayBusyError);
    } finally {
      inboundLimitB = 256;
    }
  });

  it('spreads a burst over equal nodes before any heartbeat reports the load', async () => {
    // Both nodes look idle and equal in the (stale) views: only the gateway's own count of
    // what it sent where can tell them apart.
    const gateway = new Gateway({ host: hostA, nodeId: () => hostA.peerId, ollamaUrl: standinA.url, nodeViews: () => [view(hostA.peerId), view(hostB.peerId)], metrics: new MetricsRegistry() });
    const responses = await Promise.all(Array.from({ length: 6 }, () => gateway.open(chatCall(AbortSignal.timeout(10_000), 20))));
    const byNode = new Map<string, number>();
    for (const response of responses) byNode.set(response.nodeId, (byNode.get(response.nodeId) ?? 0) + 1);
    expect(byNode.get(hostA.peerId)).toBe(3);
    expect(byNode.get(hostB.peerId)).toBe(3);
    await Promise.all(responses.map((response) => drain(response)));
    expect(gateway.rank({ model, promptCharacters: 0 }).map((node) => node.running)).toEqual([0, 0]);
  });

  it('relays only the gateway\'s paths: a peer cannot pull or delete models', async () => {
    const request = new TextEncoder().encode(JSON.stringify({ method: 'POST', path: '/api/pull', body: JSON.stringify({ model: 'evil:1b' }) }));
    const frames: string[] = [];
    for await (const frame of hostA.request(hostB.peerId, GATEWAY_PROTOCOL, request, { timeoutMs: 5_000 })) frames.push(new TextDecoder().decode(frame));
    expect(frames).toHaveLength(1);
    expect(JSON.parse(frames[0]!)).toMatchObject({ ok: false, reason: expect.stringMatching(/not relayed/) });
    expect(standinB.installedModels()).not.toContain('evil:1b');
  });

  it('aborting the client\'s signal mid-stream aborts the generation on the remote Ollama', async () => {
    const gateway = new Gateway({ host: hostA, nodeId: () => hostA.peerId, ollamaUrl: standinA.url, nodeViews: () => [view(hostB.peerId, { modelsLoaded: [model] })], metrics: new MetricsRegistry() });
    const controller = new AbortController();
    const response = await gateway.open(chatCall(controller.signal, 50_000));
    const iterator = response.body[Symbol.asyncIterator]();
    await iterator.next();
    await iterator.next();
    expect(gatewayB.inFlight()).toBe(1);
    controller.abort();
    await iterator.return?.();
    response.release();
    await waitFor('the remote generation to be aborted', () => standinB.generations().some((generation) => generation.outcome === 'aborted'), 5_000);
    await waitFor('B to stop counting it', () => gatewayB.inFlight() === 0, 5_000);
    const aborted = standinB.generations().find((generation) => generation.outcome === 'aborted')!;
    expect(aborted.tokens).toBeLessThan(50_000);
  });
});

function nodeStatus(name: string, installed: string[], loaded: Array<{ name: string; vramBytes: number; contextLength?: number }>, state: NodeStatus['state'] = 'alive'): NodeStatus {
  return {
    id: `id-${name}`, name, apiUrl: '', state, raftRole: 'follower', self: false, clusterId: null, softwareVersion: '0', protocolVersion: 1,
    startedAt: `2026-11-22T00:00:0${name.length % 10}.000Z`,
    hardware: { cpu: { model: '', cores: 1, load: 0 }, memory: { totalBytes: 0, usedBytes: 0 }, gpus: [] },
    ollama: { url: '', reachable: true, version: '0.12.6', error: null },
    models: {
      installed: installed.map((entry) => ({ name: entry, sizeBytes: 1000, family: 'llama', parameterSize: '1B', quantization: 'Q4_K_M' })),
      loaded: loaded.map((entry) => ({ name: entry.name, sizeBytes: 1000, vramBytes: entry.vramBytes, expiresAt: null, ...(entry.contextLength === undefined ? {} : { contextLength: entry.contextLength }) })),
      tokensPerSecond: {},
    },
    load: { running: 0, queued: 0, concurrencyLimit: 2 }, agents: [], capabilities: [], lastSeen: '', lastSeenAgoMs: 0,
  };
}

describe('gateway shapes', () => {
  it('lists each alive node\'s models once (llama3 and llama3:latest are one), sorted', () => {
    const nodes = [
      nodeStatus('a', ['llama3', 'qwen:7b'], []),
      nodeStatus('bb', ['llama3:latest', 'phi:2b'], []),
      nodeStatus('dead', ['only-dead:1b'], [], 'dead'),
    ];
    expect(clusterModels(nodes).map((model) => [model.name, model.nodes])).toEqual([
      ['llama3:latest', ['a', 'bb']], ['phi:2b', ['bb']], ['qwen:7b', ['a']],
    ]);
    const tags = ollamaTags(nodes);
    expect(tags.models[0]).toMatchObject({ name: 'llama3:latest', model: 'llama3:latest', size: 1000, details: { family: 'llama', parameter_size: '1B', quantization_level: 'Q4_K_M' } });
    expect(openaiModels(nodes).data.map((entry) => entry.id)).toEqual(['llama3:latest', 'phi:2b', 'qwen:7b']);
  });

  it('lists loaded models once, with the most VRAM any node gives them', () => {
    const ps = ollamaPs([nodeStatus('a', ['m:1b'], [{ name: 'm:1b', vramBytes: 10 }]), nodeStatus('b', ['m:1b'], [{ name: 'm:1b', vramBytes: 99 }])]);
    expect(ps.models).toHaveLength(1);
    expect(ps.models[0]).toMatchObject({ name: 'm:1b', size_vram: 99 });
    expect(ps.models[0]).not.toHaveProperty('context_length');
    // The context window the model was loaded with, as Ollama's /api/ps says, when the node knows it.
    const withContext = ollamaPs([nodeStatus('a', ['m:1b'], [{ name: 'm:1b', vramBytes: 10, contextLength: 8192 }])]);
    expect(withContext.models[0]).toMatchObject({ name: 'm:1b', context_length: 8192 });
  });

  it('sizes the work of Ollama and OpenAI requests', () => {
    expect(workShapeOfRequest('/api/generate', { prompt: 'abcd', system: 'ef', options: { num_predict: 7 } }, 'm')).toEqual({ model: 'm', promptCharacters: 6, outputTokens: 7 });
    expect(workShapeOfRequest('/v1/chat/completions', { messages: [{ role: 'user', content: [{ type: 'text', text: 'abc' }] }, { role: 'user', content: 'de' }], max_tokens: 9 }, 'm'))
      .toEqual({ model: 'm', promptCharacters: 5, outputTokens: 9 });
    expect(workShapeOfRequest('/api/embed', { input: ['ab', 'c'] }, 'm')).toEqual({ model: 'm', promptCharacters: 3, outputTokens: 1 });
    expect(workShapeOfRequest('/api/chat', { messages: [] }, 'm')).toEqual({ model: 'm', promptCharacters: 0 });
  });
});
