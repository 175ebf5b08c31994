// What the Ollama stand-in knows without any GPU: plausible model metadata derived from a
// model name, and the deterministic text and vectors it "generates". Everything here is a
// pure function of its inputs, so a test (in this process or another) can compute the exact
// output the stand-in will stream for a prompt and assert on it.
import { createHash } from 'node:crypto';

/** A model the stand-in serves; everything but the name is derived when left out. */
export interface StandinModelSpec {
  name: string;
  sizeBytes?: number;
  family?: string;
  parameterSize?: string;
  quantization?: string;
  /** Embedding-only model: /api/generate and /api/chat refuse it, as Ollama does. */
  embedding?: boolean;
  embeddingLength?: number;
  contextLength?: number;
  /** Generation speed of this model; the server-wide setting when left out. */
  tokensPerSecond?: number;
  /** Cold-load delay of this model; the server-wide setting when left out. */
  coldLoadMs?: number;
  /** What /api/show lists; when left out: ["embedding"], or ["completion"] plus "vision" for vision or llava models. */
  capabilities?: string[];
}

export interface StandinModel {
  name: string;
  sizeBytes: number;
  family: string;
  parameterSize: string;
  quantization: string;
  embedding: boolean;
  embeddingLength: number;
  contextLength: number;
  digest: string;
  tokensPerSecond: number | null;
  coldLoadMs: number | null;
  capabilities: string[];
}

/** Ollama treats a name without a tag as `name:latest`. */
export function normalizeModelName(name: string): string {
  const trimmed = name.trim();
  const lastSegment = trimmed.slice(trimmed.lastIndexOf('/') + 1);
  return lastSegment.includes(':') ? trimmed : `${trimmed}:latest`;
}

const embeddingNamePattern = /embed|minilm|bge-|bge:|e5-|gte-|arctic-embed/i;

/** The parameter count in billions written in a tag such as `7b`, `0.5b-instruct`, `135m`. */
function parameterBillionsFromName(name: string): number | null {
  const tag = name.slice(name.lastIndexOf(':') + 1);
  const match = /(?:^|[-_])(\d+(?:\.\d+)?)([bm])(?:$|[-_])/i.exec(tag) ?? /(?:^|[-_])(\d+(?:\.\d+)?)([bm])(?:$|[-_])/i.exec(name);
  if (match === null) return null;
  const value = Number(match[1]);
  return match[2]?.toLowerCase() === 'm' ? value / 1000 : value;
}

function formatParameterSize(billions: number): string {
  return billions < 1 ? `${Math.round(billions * 1000)}M` : `${Number(billions.toFixed(1))}B`;
}

export function resolveModelSpec(input: string | StandinModelSpec): StandinModel {
  const spec: StandinModelSpec = typeof input === 'string' ? { name: input } : input;
  if (typeof spec.name !== 'string' || spec.name.trim() === '') throw new Error('a stand-in model needs a non-empty name');
  const name = normalizeModelName(spec.name);
  const base = name.slice(name.lastIndexOf('/') + 1).split(':')[0] ?? name;
  const embedding = spec.embedding ?? embeddingNamePattern.test(name);
  // Sizes follow the usual Ollama defaults: Q4_K_M (about 0.6 byte per parameter) for
  // generative models, F16 (2 bytes per parameter) for the small embedding models.
  const billions = parameterBillionsFromName(name) ?? (embedding ? 0.137 : 3);
  const quantization = spec.quantization ?? (embedding ? 'F16' : 'Q4_K_M');
  const bytesPerParameter = quantization.startsWith('F16') ? 2 : quantization.startsWith('Q8') ? 1.07 : 0.6;
  const leadingLetters = /^[a-z]+/i.exec(base)?.[0]?.toLowerCase() ?? 'llama';
  return {
    name,
    sizeBytes: spec.sizeBytes ?? Math.round(billions * 1e9 * bytesPerParameter + 50 * 1024 * 1024),
    family: spec.family ?? (embedding ? (base.startsWith('nomic') ? 'nomic-bert' : 'bert') : leadingLetters),
    parameterSize: spec.parameterSize ?? formatParameterSize(billions),
    quantization,
    embedding,
    embeddingLength: spec.embeddingLength ?? (embedding ? 384 : 1024),
    contextLength: spec.contextLength ?? (embedding ? 512 : 4096),
    digest: createHash('sha256').update(`standin-model\0${name}`).digest('hex'),
    tokensPerSecond: spec.tokensPerSecond ?? null,
    coldLoadMs: spec.coldLoadMs ?? null,
    capabilities: spec.capabilities ?? (embedding ? ['embedding'] : /vision|llava/i.test(name) ? ['completion', 'vision'] : ['completion']),
  };
}

// A small seeded generator (mulberry32): the same seed gives the same sequence on every
// machine and in every process, which is the point.
function seededRandom(seedText: string): () => number {
  let state = createHash('sha256').update(seedText).digest().readUInt32LE(0);
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const vocabulary = [
  'the', 'mesh', 'answers', 'quietly', 'every', 'node', 'holds', 'a', 'replica', 'of', 'state',
  'tokens', 'flow', 'from', 'local', 'models', 'leader', 'elects', 'voters', 'gossip', 'carries',
  'load', 'and', 'memory', 'so', 'tasks', 'land', 'where', 'they', 'finish', 'first', 'with',
  'care', 'bounded', 'queues', 'never', 'overflow', 'heartbeats', 'arrive', 'each', 'second',
  'while', 'logs', 'commit', 'in', 'order', 'prompts', 'become', 'streams', 'agents', 'reply',
  'clearly', 'to', 'questions', 'about', 'clusters', 'graphs', 'time', 'is', 'measured', 'ticks',
  'lamps', 'glow', 'softly',
];

/**
 * The tokens the stand-in emits for a prompt: `count` words chosen by a generator seeded
 * with the model and the rendered prompt. The first token has no leading space.
 */
export function standinTokens(model: string, promptText: string, count: number): string[] {
  const next = seededRandom(`${normalizeModelName(model)}\0${promptText}`);
  const tokens: string[] = [];
  for (let index = 0; index < count; index++) {
    const word = vocabulary[Math.floor(next() * vocabulary.length)] ?? 'the';
    tokens.push(index === 0 ? word : ` ${word}`);
  }
  return tokens;
}

/** The full text of `standinTokens`, what a non-streaming request answers. */
export function standinText(model: string, promptText: string, count: number): string {
  return standinTokens(model, promptText, count).join('');
}

/** The prompt text that seeds /api/generate: Ollama renders system + prompt unless raw. */
export function renderGeneratePrompt(request: { prompt?: string; system?: string; raw?: boolean }): string {
  const prompt = request.prompt ?? '';
  if (request.raw === true || request.system === undefined || request.system === '') return prompt;
  return `${request.system}\n${prompt}`;
}

/** The prompt text that seeds /api/chat: every message as `role: content`, one a line. */
export function renderChatPrompt(messages: ReadonlyArray<{ role: string; content: string }>): string {
  return messages.map((message) => `${message.role}: ${message.content}`).join('\n');
}

const jsonDepthMax = 4;

// A value that satisfies the common parts of a JSON schema (object properties, arrays,
// enums, primitive types), so `format: schema` yields parseable, schema-shaped output.
function valueForSchema(schema: unknown, next: () => number, depth: number): unknown {
  const words = (count: number) => Array.from({ length: count }, () => vocabulary[Math.floor(next() * vocabulary.length)]).join(' ');
  if (typeof schema !== 'object' || schema === null || depth > jsonDepthMax) return words(3);
  const node = schema as Record<string, unknown>;
  if (Array.isArray(node.enum) && node.enum.length > 0) return node.enum[Math.floor(next() * node.enum.length)];
  if ('const' in node) return node.const;
  const type = Array.isArray(node.type) ? node.type.find((entry) => entry !== 'null') : node.type;
  switch (type) {
    case 'object': {
      const properties = (typeof node.properties === 'object' && node.properties !== null ? node.properties : {}) as Record<string, unknown>;
      const result: Record<string, unknown> = {};
      for (const [key, child] of Object.entries(properties)) result[key] = valueForSchema(child, next, depth + 1);
      return result;
    }
    case 'array': {
      const minItems = typeof node.minItems === 'number' ? node.minItems : 1;
      return Array.from({ length: Math.min(Math.max(minItems, 1), 3) }, () => valueForSchema(node.items, next, depth + 1));
    }
    case 'integer': return Math.floor(next() * 100);
    case 'number': return Math.round(next() * 10000) / 100;
    case 'boolean': return next() < 0.5;
    case 'null': return null;
    default: return words(3);
  }
}

/**
 * The JSON text the stand-in answers when a request sets `format`: `"json"` gives
 * `{"response": "..."}`, a JSON schema gives a value shaped by the schema.
 */
export function standinJsonText(model: string, promptText: string, format: unknown): string {
  const next = seededRandom(`${normalizeModelName(model)}\0json\0${promptText}`);
  if (format === 'json' || typeof format !== 'object' || format === null) {
    return JSON.stringify({ response: standinText(model, promptText, 8) });
  }
  return JSON.stringify(valueForSchema(format, next, 0));
}

/** JSON output is streamed in pieces of this many characters, one piece per token. */
export const jsonTokenChars = 4;

export function splitJsonTokens(text: string): string[] {
  const tokens: string[] = [];
  for (let offset = 0; offset < text.length; offset += jsonTokenChars) tokens.push(text.slice(offset, offset + jsonTokenChars));
  return tokens;
}

/** A deterministic unit-length vector for an input, as /api/embed returns normalized vectors. */
export function standinEmbedding(model: string, input: string, dimensions: number): number[] {
  const next = seededRandom(`${normalizeModelName(model)}\0embed\0${input}`);
  const vector = Array.from({ length: dimensions }, () => next() * 2 - 1);
  const norm = Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0)) || 1;
  return vector.map((value) => value / norm);
}

/** Ollama's prompt_eval_count, approximated as one token per four characters. */
export function approximateTokenCount(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}
