// The wire formats the stand-in answers a generation in: Ollama's native NDJSON / JSON
// (/api/generate, /api/chat) and Ollama's OpenAI-compatible SSE / JSON (/v1/chat/completions,
// /v1/completions), plus the parsing of OpenAI-style requests. The generation itself (slots,
// loading, pacing, logging) is format-blind and lives in server.ts.
import { renderChatPrompt } from './catalog.ts';

/** A request the stand-in refuses, with the HTTP status Ollama would use. */
export class RequestError extends Error {
  override name = 'RequestError';
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export interface GenerationResult {
  text: string;
  doneReason: string;
  promptEvalCount: number;
  promptEvalNs: number;
  evalCount: number;
  evalNs: number;
  loadNs: number;
  totalNs: number;
}

export interface GenerationOutput {
  /** Content-Type of a streamed answer. */
  contentType: string;
  /** What is written for one token while streaming. */
  chunk(token: string): string;
  /** The closing text of a stream, or the whole JSON answer when not streaming. */
  end(result: GenerationResult): string;
}

export function nativeOutput(kind: 'generate' | 'chat', model: string, stream: boolean): GenerationOutput {
  const piece = (text: string) => (kind === 'generate' ? { response: text } : { message: { role: 'assistant', content: text } });
  return {
    contentType: 'application/x-ndjson',
    chunk: (token) => JSON.stringify({ model, created_at: new Date().toISOString(), ...piece(token), done: false }) + '\n',
    end: (result) => JSON.stringify({
      model,
      created_at: new Date().toISOString(),
      ...piece(stream ? '' : result.text),
      done: true,
      done_reason: result.doneReason,
      ...(kind === 'generate' ? { context: Array.from({ length: Math.min(64, result.promptEvalCount + result.evalCount) }, (_, index) => 100 + index) } : {}),
      total_duration: result.totalNs,
      load_duration: result.loadNs,
      prompt_eval_count: result.promptEvalCount,
      prompt_eval_duration: result.promptEvalNs,
      eval_count: result.evalCount,
      eval_duration: result.evalNs,
    }) + (stream ? '\n' : ''),
  };
}

function usageOf(result: GenerationResult) {
  return { prompt_tokens: result.promptEvalCount, completion_tokens: result.evalCount, total_tokens: result.promptEvalCount + result.evalCount };
}

const sse = (value: unknown) => `data: ${JSON.stringify(value)}\n\n`;

export function openAiChatOutput(model: string, stream: boolean, includeUsage: boolean, sequence: number): GenerationOutput {
  const id = `chatcmpl-${sequence}`;
  const created = Math.floor(Date.now() / 1000);
  const base = { id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_ollama' };
  return {
    contentType: 'text/event-stream',
    chunk: (token) => sse({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: token }, finish_reason: null }] }),
    end: (result) => {
      if (!stream) {
        return JSON.stringify({
          id, object: 'chat.completion', created, model, system_fingerprint: 'fp_ollama',
          choices: [{ index: 0, message: { role: 'assistant', content: result.text }, finish_reason: result.doneReason }],
          usage: usageOf(result),
        });
      }
      return sse({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: result.doneReason }] })
        + (includeUsage ? sse({ ...base, choices: [], usage: usageOf(result) }) : '')
        + 'data: [DONE]\n\n';
    },
  };
}

export function openAiCompletionOutput(model: string, stream: boolean, includeUsage: boolean, sequence: number): GenerationOutput {
  const id = `cmpl-${sequence}`;
  const created = Math.floor(Date.now() / 1000);
  const base = { id, object: 'text_completion', created, model, system_fingerprint: 'fp_ollama' };
  return {
    contentType: 'text/event-stream',
    chunk: (token) => sse({ ...base, choices: [{ text: token, index: 0, finish_reason: null }] }),
    end: (result) => {
      if (!stream) return JSON.stringify({ ...base, choices: [{ text: result.text, index: 0, finish_reason: result.doneReason }], usage: usageOf(result) });
      return sse({ ...base, choices: [{ text: '', index: 0, finish_reason: result.doneReason }] })
        + (includeUsage ? sse({ ...base, choices: [], usage: usageOf(result) }) : '')
        + 'data: [DONE]\n\n';
    },
  };
}

export interface OpenAiRequest {
  promptText: string;
  stream: boolean;
  includeUsage: boolean;
  maxTokens: number | null;
  stops: string[];
  format: unknown;
}

function commonOpenAi(body: Record<string, unknown>): Omit<OpenAiRequest, 'promptText'> {
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  if (maxTokens !== undefined && maxTokens !== null && (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens) || maxTokens < 1)) {
    throw new RequestError(400, 'max_tokens must be a positive integer');
  }
  const stop = body.stop;
  const stops = typeof stop === 'string' ? [stop] : Array.isArray(stop) ? stop.filter((entry): entry is string => typeof entry === 'string' && entry !== '') : [];
  let format: unknown;
  const responseFormat = body.response_format as { type?: unknown; json_schema?: { schema?: unknown } } | undefined;
  if (responseFormat?.type === 'json_object') format = 'json';
  else if (responseFormat?.type === 'json_schema') format = responseFormat.json_schema?.schema ?? 'json';
  const streamOptions = body.stream_options as { include_usage?: unknown } | undefined;
  return {
    stream: body.stream === true,
    includeUsage: streamOptions?.include_usage === true,
    maxTokens: typeof maxTokens === 'number' ? maxTokens : null,
    stops,
    format,
  };
}

/** `content` of an OpenAI message: a string, or an array of parts of which text parts count. */
function messageText(content: unknown): string | null {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  if (!Array.isArray(content)) return null;
  return content.map((part: { type?: unknown; text?: unknown }) => (part?.type === 'text' && typeof part.text === 'string' ? part.text : '')).join('');
}

export function parseOpenAiChat(body: Record<string, unknown>): OpenAiRequest {
  if (!Array.isArray(body.messages) || body.messages.length === 0) throw new RequestError(400, 'messages must be a non-empty array');
  const messages = body.messages.map((message: unknown, index) => {
    const { role, content } = (message ?? {}) as { role?: unknown; content?: unknown };
    const text = messageText(content);
    if (typeof role !== 'string' || text === null) throw new RequestError(400, `messages[${index}] must have a role and a string or text-part content`);
    return { role, content: text };
  });
  return { ...commonOpenAi(body), promptText: renderChatPrompt(messages) };
}

export function parseOpenAiCompletion(body: Record<string, unknown>): OpenAiRequest {
  if (typeof body.prompt !== 'string') throw new RequestError(400, 'prompt must be a string');
  return { ...commonOpenAi(body), promptText: body.prompt };
}

/** Ollama's OpenAI-compatible error body. */
export function openAiError(status: number, message: string): { error: { message: string; type: string; param: null; code: null } } {
  // Ollama calls a missing model and its own failures api_error, a malformed request invalid_request_error.
  return { error: { message, type: status >= 500 || status === 404 ? 'api_error' : 'invalid_request_error', param: null, code: null } };
}
