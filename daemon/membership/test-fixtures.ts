// A valid heartbeat body for membership tests, shaped like a small GPU host's.
import { SOFTWARE_VERSION } from '../../protocol/version.ts';
import type { HeartbeatBody } from './membership.ts';

export function sampleBody(name: string, overrides: Partial<HeartbeatBody> = {}): HeartbeatBody {
  return {
    softwareVersion: SOFTWARE_VERSION,
    clusterId: null,
    name,
    apiUrl: `http://127.0.0.1:7420`,
    startedAt: 1_700_000_000_000,
    raft: { role: 'follower', term: 3, leaderId: null, commitIndex: 42, clusterEmpty: false },
    hardware: {
      cpu: { model: 'AMD Ryzen 9 7950X 16-Core Processor', cores: 32, load: 0.12 },
      memory: { totalBytes: 64 * 2 ** 30, usedBytes: 21 * 2 ** 30 },
      gpus: [{ model: 'NVIDIA GeForce RTX 4090', vendor: 'NVIDIA', vramTotalBytes: 24 * 2 ** 30, vramUsedBytes: 5 * 2 ** 30, utilization: 0.03 }],
    },
    ollama: {
      url: 'http://127.0.0.1:11434',
      reachable: true,
      version: '0.12.3',
      error: null,
      installed: [
        { name: 'llama3.1:8b', sizeBytes: 4_920_000_000, family: 'llama', parameterSize: '8.0B', quantization: 'Q4_K_M' },
        { name: 'qwen2.5-coder:14b', sizeBytes: 8_990_000_000, family: 'qwen2', parameterSize: '14.8B', quantization: 'Q4_K_M' },
        { name: 'nomic-embed-text:latest', sizeBytes: 274_000_000, family: 'nomic-bert', parameterSize: '137M', quantization: 'F16' },
      ],
      loaded: [{ name: 'llama3.1:8b', sizeBytes: 6_300_000_000, vramBytes: 6_300_000_000, expiresAt: '2026-11-22T02:10:00.000Z' }],
      tokensPerSecond: { 'llama3.1:8b': 112.5 },
    },
    load: { running: 1, queued: 0, concurrencyLimit: 2 },
    agents: [
      { id: 'coder', model: 'qwen2.5-coder:14b', capabilities: [{ name: 'code', proficiency: 0.9 }, { name: 'review', proficiency: 0.7 }] },
      { id: 'writer', model: 'llama3.1:8b', capabilities: [{ name: 'summarize', proficiency: 0.8 }] },
    ],
    ...overrides,
  };
}
