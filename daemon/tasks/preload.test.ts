// Preloads: the wire codec, who may ask, and what a node loads (and refuses to) on the
// Ollama stand-in over real HTTP: an empty-prompt generation that loads, never a generation.
import { afterEach, describe, expect, it } from 'vitest';
import { preloadRequestCodec } from '../../protocol/preload.ts';
import { installedNameOf } from '../../scheduler/tasks/node-view.ts';
import { startStandin, type Standin } from '../../tests/ollama-standin/server.ts';
import { sampleBody } from '../membership/test-fixtures.ts';
import type { HealthSnapshot } from '../probe/index.ts';
import { MetricsRegistry } from '../metrics/registry.ts';
import { OllamaProbe } from '../probe/ollama.ts';
import { PreloadService } from './preload.ts';
import { FakeNetwork } from './test-cluster.ts';
import { waitFor } from './test-harness.ts';

const encoder = new TextEncoder();
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

type Gpus = HealthSnapshot['hardware']['gpus'];

/** A node's preload service on its own stand-in, with a real Ollama probe and GPUs as given. */
async function node(network: FakeNetwork, id: string, leader: () => string | null, options: { coldLoadMs?: number; gpus?: Gpus; accept?: boolean } = {}) {
  const server: Standin = await startStandin({ models: ['llama3.2:3b', 'qwen2.5:7b', 'mistral:7b'], coldLoadMs: options.coldLoadMs ?? 200, logFile: null });
  cleanups.push(() => server.close());
  const ollama = new OllamaProbe({ url: server.url, intervalMs: 60_000 });
  cleanups.push(() => ollama.stop());
  await ollama.start();
  // The GPUs are read at each request: a test may set them once it knows the models' sizes.
  const hardware = { ...sampleBody(id).hardware, gpus: options.gpus ?? [] };
  const registry = new MetricsRegistry();
  const service = new PreloadService({
    nodeId: id, host: network.host(id), leader, ollamaUrl: server.url, accept: options.accept ?? true, metrics: registry,
    probe: {
      snapshot: () => ({ hardware, ollama: ollama.current(), agents: [] }),
      recordLoad: (model, loadMs) => ollama.recordLoad(model, loadMs),
      installedName: (model) => installedNameOf(ollama.current().installed, model),
      refreshOllama: () => void ollama.refresh(),
    },
  });
  cleanups.push(() => service.stop());
  await service.start();
  const loadedNames = () => ollama.current().loaded.map((model) => model.name);
  return { server, ollama, service, loadedNames, registry };
}

describe('preload codec', () => {
  it('round-trips and refuses malformed requests with the reason', () => {
    const request = { kind: 'preload' as const, leader: 'n1', term: 4, model: 'qwen2.5:7b' };
    expect(preloadRequestCodec.decode(preloadRequestCodec.encode(request))).toEqual(request);
    expect(() => preloadRequestCodec.decode(encoder.encode(JSON.stringify({ ...request, model: '' })))).toThrow(/invalid preload request/);
    expect(() => preloadRequestCodec.decode(encoder.encode(JSON.stringify({ ...request, extra: 1 })))).toThrow(/invalid preload request/);
    expect(() => preloadRequestCodec.decode(new Uint8Array(5 * 1024))).toThrow(/over the 4096-byte limit/);
  });
});

describe('PreloadService', () => {
  it('loads a model the leader asks for, without a generation, and ignores anyone else', async () => {
    const network = new FakeNetwork();
    let leader: string | null = 'n1';
    const asker = await node(network, 'n1', () => leader);
    const worker = await node(network, 'n2', () => leader);
    // A node that is not the leader asks: nothing happens.
    const impostor = await node(network, 'n3', () => leader);
    impostor.service.ask('n2', 'qwen2.5:7b', 4);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(worker.server.loadedModels()).toEqual([]);

    asker.service.ask('n2', 'qwen2.5:7b', 4);
    await waitFor('the worker\'s probe to see qwen2.5:7b loaded', () => worker.loadedNames().includes('qwen2.5:7b'));
    expect(worker.server.loadedModels().map((model) => model.name)).toEqual(['qwen2.5:7b']);
    // A load, not a generation: an independent count of generations is unchanged.
    expect(worker.server.generationsTotal()).toBe(0);
    expect(worker.service.stats).toMatchObject({ started: 1, loaded: 1, failed: 0 });
    // The load fed the node's load-speed estimate.
    expect(worker.ollama.measuredSpeeds().loadBytesPerSecond).toBeGreaterThan(0);
    // The leader preloading on itself goes straight to its own Ollama.
    asker.service.ask('n1', 'mistral:7b', 4);
    await waitFor('the leader to load mistral:7b', () => asker.loadedNames().includes('mistral:7b'));
    expect(asker.service.stats.asked).toBe(2);
    // After a change of leader, the old one is not obeyed.
    leader = 'n3';
    asker.service.ask('n2', 'llama3.2:3b', 4);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(worker.server.loadedModels().map((model) => model.name)).toEqual(['qwen2.5:7b']);
  });

  it('refuses what is not installed, loaded already, a second load at once, and what would not fit in VRAM', async () => {
    const network = new FakeNetwork();
    const gpus: Gpus = [];
    const one = await node(network, 'n1', () => 'n1', { coldLoadMs: 400, gpus });
    const size = (name: string) => one.ollama.current().installed.find((model) => model.name === name)!.sizeBytes;
    // Room for the 3B and one 7B, not two 7Bs.
    gpus.push({ model: 'Fake GPU', vendor: 'Fake', vramTotalBytes: size('llama3.2:3b') + size('qwen2.5:7b') + size('mistral:7b') / 2, vramUsedBytes: null, utilization: null });
    expect(one.service.load('phi3:mini')).toMatch(/phi3:mini is not installed here/);
    // Another program fills the card (the driver says so): nothing fits.
    gpus[0]!.vramUsedBytes = gpus[0]!.vramTotalBytes;
    expect(one.service.load('llama3.2:3b')).toMatch(/does not fit beside the loaded models/);
    gpus[0]!.vramUsedBytes = null;
    expect(one.service.load('llama3.2:3b')).toBeNull();
    expect(one.service.load('llama3.2:3b')).toMatch(/being loaded already/);
    expect(one.service.load('qwen2.5:7b')).toMatch(/another preload is under way \(llama3\.2:3b\)/);
    await waitFor('llama3.2:3b loaded', () => one.loadedNames().includes('llama3.2:3b'));
    expect(one.service.load('llama3.2:3b')).toMatch(/loaded already/);
    expect(one.service.load('qwen2.5:7b')).toBeNull();
    await waitFor('qwen2.5:7b loaded', () => one.loadedNames().includes('qwen2.5:7b'));
    expect(one.service.load('mistral:7b')).toMatch(/does not fit beside the loaded models .* Ollama would evict one/);
    expect(one.server.loadedModels().map((model) => model.name).sort()).toEqual(['llama3.2:3b', 'qwen2.5:7b']);
    expect(one.service.stats).toMatchObject({ started: 2, loaded: 2, refused: 6 });
    expect(one.registry.render()).toMatch(/hivemesh_preloads_total\{outcome="refused"\} 6/);
    expect(one.registry.render()).toMatch(/hivemesh_preloads_total\{outcome="loaded"\} 2/);
  });

  it('stops at Ollama\'s default number of loaded models, beyond which Ollama evicts one', async () => {
    const network = new FakeNetwork();
    const one = await node(network, 'n1', () => 'n1', { coldLoadMs: 20 });
    one.server.setModels(['llama3.2:3b', 'qwen2.5:7b', 'mistral:7b', 'phi3:mini']);
    await one.ollama.refresh();
    for (const model of ['llama3.2:3b', 'qwen2.5:7b', 'mistral:7b']) {
      expect(one.service.load(model)).toBeNull();
      await waitFor(`${model} loaded`, () => one.loadedNames().includes(model));
    }
    expect(one.service.load('phi3:mini')).toMatch(/3 models are loaded, Ollama's default most \(OLLAMA_MAX_LOADED_MODELS: 3 per GPU\)/);
  });

  it('a node started with --no-preload refuses every request', async () => {
    const network = new FakeNetwork();
    const asker = await node(network, 'n1', () => 'n1');
    const declining = await node(network, 'n2', () => 'n1', { accept: false });
    asker.service.ask('n2', 'qwen2.5:7b', 1);
    await waitFor('the request to be refused', () => declining.service.stats.refused === 1);
    expect(declining.service.load('qwen2.5:7b')).toMatch(/started with --no-preload/);
    expect(declining.server.loadedModels()).toEqual([]);
  });
});
