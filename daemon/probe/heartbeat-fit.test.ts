import { describe, expect, it } from 'vitest';
import { heartbeatCodec } from '../../protocol/heartbeat.ts';
import * as limits from '../../protocol/limits.ts';
import { PROTOCOL_VERSION } from '../../protocol/version.ts';
import { sampleBody } from '../membership/test-fixtures.ts';
import { fitHeartbeatBody } from './heartbeat-fit.ts';

const envelope = {
  kind: 'heartbeat', protocolVersion: PROTOCOL_VERSION, nodeId: '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK',
  instanceId: '0f0e0d0c-0b0a-4908-8706-050403020100', sequence: 123_456_789, sentAt: 1_800_000_000_000, leaving: true,
} as const;

/** A host with `count` installed models, one automatic agent per model (up to the bound), some loaded, measured or used by a configured agent. */
function bigBody(count: number) {
  const names = Array.from({ length: count }, (_, index) => `qwen2.5-coder-variant-${String(index).padStart(3, '0')}:7b-instruct-q4_K_M`);
  const body = sampleBody('gpu-host-01');
  body.ollama.installed = names.map((name) => ({ name, sizeBytes: 4_683_087_332, family: 'qwen2', parameterSize: '7.6B', quantization: 'Q4_K_M' }));
  body.ollama.loaded = [names[count - 1]!, names[count - 2]!].map((name) => ({ name, sizeBytes: 6e9, vramBytes: 6e9, expiresAt: null, contextLength: 8192 }));
  body.ollama.tokensPerSecond = { [names[count - 3]!]: 40, [names[count - 1]!]: 55 };
  body.agents = [
    { id: 'coder', model: names[count - 4]!, capabilities: [{ name: 'code', proficiency: 0.9 }] },
    ...names.map((name) => ({ id: name, model: name, capabilities: [{ name: 'chat', proficiency: 0.7 }] })),
  ];
  return { body, names };
}

describe('fitHeartbeatBody', () => {
  it('leaves a heartbeat that fits as it is', () => {
    const body = sampleBody('small');
    expect(fitHeartbeatBody(body)).toEqual({ body, omittedModels: 0 });
    const { body: hundred } = bigBody(100);
    const fitted = fitHeartbeatBody(hundred);
    expect(fitted.omittedModels).toBe(0);
    expect(fitted.body.ollama.installed).toHaveLength(100);
  });

  it('keeps a host with hundreds of models within the bound: loaded, measured and agent models first', () => {
    for (const count of [250, limits.modelsPerNodeMax]) {
      const { body, names } = bigBody(count);
      // As it is, the codec refuses it: the node would send no heartbeat at all.
      expect(() => heartbeatCodec.encode({ ...body, ...envelope })).toThrow();
      const { body: fitted, omittedModels } = fitHeartbeatBody(body);
      const bytes = heartbeatCodec.encode({ ...fitted, ...envelope });
      expect(bytes.byteLength).toBeLessThanOrEqual(limits.heartbeatBytesMax);
      // It uses the room: one more model would not fit.
      expect(bytes.byteLength).toBeGreaterThan(limits.heartbeatBytesMax - 2_000);
      const kept = fitted.ollama.installed.map((model) => model.name);
      expect(omittedModels).toBe(count - kept.length);
      expect(kept.length).toBeGreaterThan(150);
      for (const name of names.slice(count - 4)) expect(kept).toContain(name);
      // The rest in Ollama's order; everything about a model left out goes with it.
      expect(kept.slice(0, 10)).toEqual(names.slice(0, 10));
      expect(fitted.ollama.loaded).toHaveLength(2);
      expect(Object.keys(fitted.ollama.tokensPerSecond)).toHaveLength(2);
      expect(fitted.agents.every((agent) => kept.includes(agent.model))).toBe(true);
      expect(fitted.agents.find((agent) => agent.id === 'coder')).toBeDefined();
      expect(fitted.agents.length).toBeLessThanOrEqual(limits.agentsPerNodeMax);
    }
  });
});
