// The mesh over loopback with real daemon processes (mDNS off, a static --bootstrap list):
// three daemons see each other alive in /api/status/agents, each with its hardware, and
// the Ollama state of the one node that has an Ollama (a stand-in) -- its installed
// models, and a model it loads later -- reaches the other two through gossip. Cluster
// formation is the consensus suites' concern (tests/loopback/consensus*.test.ts).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeStatus } from '../../protocol/api.ts';
import { startStandin, type Standin } from '../ollama-standin/server.ts';
import { agentsStatus, outputTails, prepareDaemons, startAll, writeClusterKey, type MeshDaemon } from '../support/cluster.ts';
import { ProcessGroup, tempDir, waitUntil } from '../support/processes.ts';

const standinModels = ['llama3.2:1b', 'qwen2.5:7b'];

describe('mesh of three daemons on loopback (bootstrap list, no mDNS)', () => {
  const group = new ProcessGroup();
  let standin: Standin;
  let daemons: MeshDaemon[];

  beforeAll(async () => {
    standin = await startStandin({ host: '127.0.0.1', port: 0, models: standinModels, coldLoadMs: 50, logFile: null });
    group.onCleanup(() => standin.close());
    const secretFile = writeClusterKey(tempDir('mesh-key'));
    daemons = await prepareDaemons(group, [
      { name: 'mesh-a', mdns: false, secretFile, ollamaUrl: standin.url },
      { name: 'mesh-b', mdns: false, secretFile },
      { name: 'mesh-c', mdns: false, secretFile },
    ], { bootstrapAll: true });
    await startAll(daemons);
  }, 60_000);

  afterAll(async () => {
    await group.stopAll();
  });

  async function viewOf(observer: MeshDaemon): Promise<Map<string, NodeStatus>> {
    const agents = await agentsStatus(observer);
    return new Map((agents?.nodes ?? []).map((node) => [node.id, node]));
  }

  it('every daemon lists all three alive, with hardware and the Ollama state of the others', async () => {
    const started = performance.now();
    await waitUntil('every daemon to list all three alive', async () => {
      for (const observer of daemons) {
        const view = await viewOf(observer);
        if (view.size !== 3) return false;
        for (const subject of daemons) if (view.get(subject.nodeId)?.state !== 'alive') return false;
      }
      return true;
    }, 20_000, 200).catch((error: Error) => {
      throw new Error(`${error.message}\n${outputTails(daemons)}`);
    });
    console.log(`[measure] 3 loopback daemons all see each other alive ${(performance.now() - started).toFixed(0)} ms after they were live`);

    const [withOllama, ...withoutOllama] = daemons as [MeshDaemon, MeshDaemon, MeshDaemon];
    // The probe polls Ollama in the background: wait until its models reached everyone.
    await waitUntil('the stand-in models to be gossiped to every daemon', async () => {
      for (const observer of daemons) {
        const node = (await viewOf(observer)).get(withOllama.nodeId);
        const names = node?.models.installed.map((model) => model.name) ?? [];
        if (!standinModels.every((model) => names.includes(model))) return false;
      }
      return true;
    }, 15_000, 200);

    for (const observer of daemons) {
      const view = await viewOf(observer);
      expect([...view.keys()].sort()).toEqual(daemons.map((daemon) => daemon.nodeId).sort());
      for (const subject of daemons) {
        const node = view.get(subject.nodeId)!;
        expect(node.name).toBe(subject.spec.name);
        expect(node.apiUrl).toBe(subject.apiUrl);
        expect(node.self).toBe(subject === observer);
        // Hardware comes from systeminformation on each host and travels in the heartbeat.
        expect(node.hardware.cpu.cores).toBeGreaterThan(0);
        expect(node.hardware.memory.totalBytes).toBeGreaterThan(0);
        expect(['leader', 'follower', 'learner', 'candidate', 'unknown']).toContain(node.raftRole);
      }
      const ollamaNode = view.get(withOllama.nodeId)!;
      expect(ollamaNode.ollama.reachable).toBe(true);
      expect(ollamaNode.ollama.url).toBe(standin.url);
      const installed = new Map(ollamaNode.models.installed.map((model) => [model.name, model]));
      for (const name of standinModels) expect(installed.get(name)!.sizeBytes).toBeGreaterThan(0);
      for (const other of withoutOllama) {
        const node = view.get(other.nodeId)!;
        expect(node.ollama.reachable).toBe(false);
        expect(node.models.installed).toEqual([]);
      }
    }
  }, 45_000);

  it('a model loaded on one host shows up as loaded, with its VRAM, on the other daemons', async () => {
    const [withOllama] = daemons as [MeshDaemon];
    // An empty prompt makes Ollama load the model and keep it (keep_alive -1: never expires).
    const response = await fetch(`${standin.url}/api/generate`, {
      method: 'POST',
      body: JSON.stringify({ model: 'qwen2.5:7b', prompt: '', keep_alive: -1, stream: false }),
      signal: AbortSignal.timeout(5_000),
    });
    expect(response.status).toBe(200);
    await response.text();
    const started = performance.now();
    await waitUntil('the loaded model to be gossiped to every daemon', async () => {
      for (const observer of daemons) {
        const node = (await viewOf(observer)).get(withOllama.nodeId);
        const loaded = node?.models.loaded.find((model) => model.name === 'qwen2.5:7b');
        if (loaded === undefined || loaded.vramBytes <= 0) return false;
      }
      return true;
    }, 20_000, 200);
    console.log(`[measure] a newly loaded model reached every daemon's agents list in ${(performance.now() - started).toFixed(0)} ms`);
  }, 45_000);
});
