// What the gateway answers without asking any Ollama, in the shapes Ollama and OpenAI
// clients parse: error bodies, the cluster's model list (/api/tags, /v1/models) and loaded
// models (/api/ps) built from the nodes' heartbeats, and the work shape of a request for
// placement (model, prompt size, expected output tokens).
import type { NodeStatus } from '../../protocol/api.ts';
import type { WorkShape } from '../../scheduler/tasks/placement.ts';
import { modelKey, normalizeModelName, sameModel } from '../../scheduler/tasks/node-view.ts';

export type GatewayFlavor = 'ollama' | 'openai';

/** Ollama's error body is `{"error": "text"}`. */
export function ollamaError(message: string): { error: string } {
  return { error: message };
}

/** OpenAI's error body; `type` and `code` follow what OpenAI sends for the same case. */
export function openaiError(message: string, type: string, code: string | null): { error: { message: string; type: string; param: null; code: string | null } } {
  return { error: { message, type, param: null, code } };
}

/** The OpenAI `type` for an HTTP status, as OpenAI's API uses them. */
export function openaiErrorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'invalid_request_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'api_error';
  return 'invalid_request_error';
}

export function modelNotFoundMessage(model: string): string {
  return `model "${model}" not found, try pulling it first`;
}

function aliveNodes(nodes: readonly NodeStatus[]): NodeStatus[] {
  return nodes.filter((node) => node.state === 'alive' && node.ollama.reachable);
}

function details(model: NodeStatus['models']['installed'][number]) {
  const family = model.family ?? '';
  return {
    parent_model: '',
    format: 'gguf',
    family,
    families: family === '' ? null : [family],
    parameter_size: model.parameterSize ?? '',
    quantization_level: model.quantization ?? '',
  };
}

export interface ClusterModel {
  name: string;
  size: number;
  /** Nodes that have it installed, by name. */
  nodes: string[];
  /** The earliest start among those nodes: the best "modified" time a heartbeat gives. */
  since: string;
  details: ReturnType<typeof details>;
}

/** Installed models of the alive nodes, one entry per model, sorted by name. */
export function clusterModels(nodes: readonly NodeStatus[]): ClusterModel[] {
  const byName = new Map<string, ClusterModel>();
  for (const node of aliveNodes(nodes)) {
    for (const model of node.models.installed) {
      const name = normalizeModelName(model.name);
      // One entry per model whatever the case each node's Ollama spells it in.
      const key = modelKey(name);
      const existing = byName.get(key);
      if (existing === undefined) {
        byName.set(key, { name, size: model.sizeBytes, nodes: [node.name], since: node.startedAt, details: details(model) });
      } else {
        existing.nodes.push(node.name);
        if (node.startedAt < existing.since) existing.since = node.startedAt;
      }
    }
  }
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * GET /api/tags for the cluster. Heartbeats carry no digests, so `digest` is empty rather
 * than made up; `modified_at` is when the earliest node holding the model started.
 */
export function ollamaTags(nodes: readonly NodeStatus[]) {
  return {
    models: clusterModels(nodes).map((model) => ({
      name: model.name,
      model: model.name,
      modified_at: model.since,
      size: model.size,
      digest: '',
      details: model.details,
    })),
  };
}

/** GET /api/ps for the cluster: each loaded model once, with the most VRAM any node gives it. */
export function ollamaPs(nodes: readonly NodeStatus[]) {
  const byName = new Map<string, { name: string; model: string; size: number; digest: string; details: ReturnType<typeof details>; expires_at: string; size_vram: number; context_length?: number }>();
  for (const node of aliveNodes(nodes)) {
    for (const loaded of node.models.loaded) {
      const name = normalizeModelName(loaded.name);
      const installed = node.models.installed.find((model) => sameModel(model.name, name));
      const key = modelKey(name);
      const existing = byName.get(key);
      if (existing !== undefined && existing.size_vram >= loaded.vramBytes) continue;
      byName.set(key, {
        name,
        model: name,
        size: loaded.sizeBytes,
        digest: '',
        details: installed === undefined ? details({ name, sizeBytes: loaded.sizeBytes }) : details(installed),
        // Null means "never expires"; Ollama then reports a date far in the future.
        expires_at: loaded.expiresAt ?? '2318-01-01T00:00:00Z',
        size_vram: loaded.vramBytes,
        ...(loaded.contextLength === undefined ? {} : { context_length: loaded.contextLength }),
      });
    }
  }
  return { models: [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) };
}

/** GET /v1/models, as Ollama's OpenAI layer answers it. */
export function openaiModels(nodes: readonly NodeStatus[]) {
  return {
    object: 'list',
    data: clusterModels(nodes).map((model) => ({
      id: model.name,
      object: 'model',
      created: Math.floor(Date.parse(model.since) / 1000) || 0,
      owned_by: 'library',
    })),
  };
}

function textLength(value: unknown): number {
  if (typeof value === 'string') return value.length;
  // OpenAI content parts: [{type: 'text', text}, {type: 'image_url', ...}].
  if (Array.isArray(value)) return value.reduce((sum: number, part: unknown) => sum + textLength((part as { text?: unknown })?.text ?? ''), 0);
  return 0;
}

function positiveInteger(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? Math.min(Math.floor(value), 131_072) : undefined;
}

/**
 * The work shape of a generation or embedding request, for placement: the characters of
 * everything the model reads, and the output tokens asked for when the request says
 * (Ollama's options.num_predict, OpenAI's max_tokens / max_completion_tokens). An
 * embedding produces no tokens: only its input counts.
 */
export function workShapeOfRequest(endpoint: string, body: Record<string, unknown>, model: string): WorkShape {
  let promptCharacters = textLength(body.prompt) + textLength(body.system) + textLength(body.suffix);
  if (Array.isArray(body.messages)) {
    for (const message of body.messages) promptCharacters += textLength((message as { content?: unknown })?.content);
  }
  const input = body.input;
  if (typeof input === 'string') promptCharacters += input.length;
  else if (Array.isArray(input)) for (const entry of input) promptCharacters += textLength(entry);
  const embedding = endpoint === '/api/embed' || endpoint === '/api/embeddings' || endpoint === '/v1/embeddings';
  const options = typeof body.options === 'object' && body.options !== null ? body.options as Record<string, unknown> : {};
  const outputTokens = embedding ? 1 : positiveInteger(options.num_predict) ?? positiveInteger(body.max_tokens) ?? positiveInteger(body.max_completion_tokens);
  return outputTokens === undefined ? { model, promptCharacters } : { model, promptCharacters, outputTokens };
}

/**
 * An OpenAI /v1/embeddings answer with each embedding as OpenAI's base64 form: the
 * little-endian float32 bytes, base64-encoded. The official OpenAI Node and .NET clients ask
 * for it by default (encoding_format "base64") and decode whatever comes back that way, so an
 * Ollama that answers arrays of numbers regardless would hand them garbage vectors.
 * Embeddings already given as strings (an Ollama that honours the field) are left alone.
 * Null when the text is not an embeddings answer (passed on unchanged).
 */
export function embeddingsAsBase64(text: string): string | null {
  let answer: unknown;
  try {
    answer = JSON.parse(text);
  } catch {
    return null;
  }
  const data = (answer as { data?: unknown } | null)?.data;
  if (!Array.isArray(data)) return null;
  for (const item of data) {
    const embedding = (item as { embedding?: unknown } | null)?.embedding;
    if (!Array.isArray(embedding)) continue;
    if (!embedding.every((value) => typeof value === 'number')) return null;
    const floats = Float32Array.from(embedding as number[]);
    // Float32Array is in the platform's byte order; OpenAI's is little-endian.
    const bytes = Buffer.alloc(floats.length * 4);
    for (let index = 0; index < floats.length; index += 1) bytes.writeFloatLE(floats[index]!, index * 4);
    (item as { embedding: unknown }).embedding = bytes.toString('base64');
  }
  return JSON.stringify(answer);
}
