// One generation on the local Ollama, through the `ollama` npm client: `generate` for a
// prompt, `chat` for messages, always streamed. Text goes to `onText` as it arrives; the
// final chunk's counters become the task's usage. Failures come out as GenerationError
// with a reason people can act on and whether another attempt could succeed. The text
// reaches `onText` in whole characters (text-deltas.ts), and the output is exactly what
// `onText` was given, cut at taskOutputBytesMax.
import { Ollama } from 'ollama';
import { taskOutputBytesMax } from '../../protocol/limits.ts';
import type { ChatMessage, TaskFormat, Usage } from '../../protocol/tasks.ts';
import { truncateUtf8 } from '../../scheduler/state/state.ts';
import { describeOllamaFailure, httpStatusOf } from '../probe/ollama.ts';
import { ollamaFetch } from './ollama-transport.ts';
import { SurrogateCarry } from './text-deltas.ts';

export interface GenerationRequest {
  model: string;
  prompt: string | null;
  messages: ChatMessage[] | null;
  system: string | null;
  options: Record<string, unknown> | null;
  format: TaskFormat | null;
  /** Ollama's keep_alive ("5m", seconds, -1); taken from the task's options when given there. */
  keepAlive: string | number | null;
}

export interface GenerationResult {
  /**
   * At most taskOutputBytesMax bytes of UTF-8, cut between characters: the concatenation
   * of what was streamed to onText, or its start.
   */
  output: string;
  outputTruncated: boolean;
  usage: Usage;
  /** Raw counters for the probe's tokens/s average. */
  evalCount: number;
  evalDurationNs: number;
}

/** An expected failure of a generation. `retryable`: another attempt (maybe elsewhere) could succeed. */
export class GenerationError extends Error {
  override name = 'GenerationError';
  readonly retryable: boolean;
  constructor(message: string, retryable: boolean, options?: { cause?: unknown }) {
    super(message, options);
    this.retryable = retryable;
  }
}

function finiteNonNegative(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0;
}

/** Usage from Ollama's final chunk (durations in ns). */
export function usageFromFinal(final: { prompt_eval_count?: unknown; eval_count?: unknown; eval_duration?: unknown; load_duration?: unknown; total_duration?: unknown }): Usage {
  const completionTokens = Math.round(finiteNonNegative(final.eval_count));
  const evalNs = finiteNonNegative(final.eval_duration);
  return {
    promptTokens: Math.round(finiteNonNegative(final.prompt_eval_count)),
    completionTokens,
    tokensPerSecond: evalNs > 0 ? Math.round((completionTokens / (evalNs / 1e9)) * 100) / 100 : 0,
    loadMs: Math.round(finiteNonNegative(final.load_duration) / 1e4) / 100,
    totalMs: Math.round(finiteNonNegative(final.total_duration) / 1e4) / 100,
  };
}

// Ollama's own words for a request no retry can fix.
const permanentPattern = /not found|try pulling|invalid|unknown|unsupported|does not support|must be|cannot unmarshal|json: /i;

/**
 * Classifies a failure of the Ollama call: HTTP 4xx (unknown model, invalid options or
 * format) is permanent, except 408/429; 5xx, refused or cut connections and timeouts are
 * retryable. An error message inside the stream is permanent when Ollama's wording says so.
 */
export function classifyGenerationError(error: unknown, url: string, endpoint: string, timeoutMs: number): GenerationError {
  if (error instanceof GenerationError) return error;
  const status = httpStatusOf(error);
  const description = describeOllamaFailure(error, url, endpoint, timeoutMs);
  if (status !== undefined) {
    const retryable = status >= 500 || status === 408 || status === 429;
    const hint = status === 404 ? ' (the model is not installed on this node: `ollama pull` it, or submit to a model the cluster has)' : '';
    return new GenerationError(description + hint, retryable, { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  if (message === 'Did not receive done or success response in stream.') {
    return new GenerationError(`Ollama at ${url} ended the ${endpoint} stream before the final chunk: it may have crashed or been restarted`, true, { cause: error });
  }
  // A plain Error whose message came from an {"error": ...} line of the stream.
  const fromStream = error instanceof Error && error.name === 'Error' && (error as { cause?: unknown }).cause === undefined && (error as { code?: unknown }).code === undefined;
  if (fromStream) {
    return new GenerationError(`Ollama at ${url} failed during ${endpoint}: ${message}`, !permanentPattern.test(message), { cause: error });
  }
  return new GenerationError(description, true, { cause: error });
}

/** Splits `keep_alive` out of the task's options: Ollama takes it beside them, not inside. */
export function splitKeepAlive(options: Record<string, unknown> | null): { options: Record<string, unknown> | null; keepAlive: string | number | null } {
  if (options === null || !Object.hasOwn(options, 'keep_alive')) return { options, keepAlive: null };
  const { keep_alive: keepAlive, ...rest } = options;
  const valid = typeof keepAlive === 'string' || typeof keepAlive === 'number' ? keepAlive : null;
  return { options: Object.keys(rest).length === 0 ? null : rest, keepAlive: valid };
}

export interface RunGenerationOptions {
  ollamaUrl: string;
  /** Aborts the HTTP request (cancel, fencing, stop): Ollama sees the connection close. */
  signal: AbortSignal;
  /** Bound on the whole generation; past it the result is a retryable GenerationError. */
  timeoutMs: number;
  /**
   * The text as it comes, in whole characters: a chunk of Ollama's that ends on the first
   * half of a surrogate pair has that half moved to the next text. A stream that ends
   * (finished, failed, aborted) on a held half gives a last text of U+FFFD; lone halves
   * Ollama never paired are U+FFFD too.
   */
  onText: (text: string) => void;
  /**
   * Called once, early in a generation, with the tokens streamed since the first one and
   * the time they took (Ollama streams about one token per chunk): a first reading of the
   * speed, long before the final chunk of a long generation says it exactly.
   */
  onEarlySpeed?: (tokens: number, elapsedNs: number) => void;
  /**
   * Called when the generation ends without a result (aborted, timed out, failed), before it
   * throws, with what it had generated, bounded as a result's output is. Not called when
   * nothing was generated.
   */
  onUnfinished?: (partial: { output: string; outputTruncated: boolean }) => void;
}

/** An early speed reading needs this many chunks after the first, over at least this long. */
const earlySpeedChunksMin = 8;
const earlySpeedElapsedMsMin = 100;

/**
 * Runs the generation to its end. Throws GenerationError for failures of Ollama and
 * timeouts; when `signal` aborts, rethrows its reason (the caller knows why it aborted).
 */
export async function runGeneration(request: GenerationRequest, options: RunGenerationOptions): Promise<GenerationResult> {
  // A timer cleared at the end, not AbortSignal.timeout: at a thousand short tasks a second,
  // timers of the default ten minutes would pile up by the hundred thousand.
  const timeoutController = new AbortController();
  const timer = setTimeout(() => timeoutController.abort(new Error('timeout')), options.timeoutMs);
  const timeout = timeoutController.signal;
  const signal = AbortSignal.any([options.signal, timeout]);
  // One client per generation: its fetch carries this generation's signal, so an abort
  // works even before Ollama sends the first byte (a cold load), which the client's own
  // abort() cannot do.
  const client = new Ollama({ host: options.ollamaUrl, fetch: (input, init) => ollamaFetch(input, { ...init, signal: init?.signal ? AbortSignal.any([init.signal, signal]) : signal }) });
  const endpoint = request.messages !== null ? 'POST /api/chat' : 'POST /api/generate';
  const common = {
    model: request.model,
    stream: true as const,
    ...(request.options === null ? {} : { options: request.options }),
    ...(request.format === null ? {} : { format: request.format }),
    ...(request.keepAlive === null ? {} : { keep_alive: request.keepAlive }),
  };
  const parts: string[] = [];
  let keptChars = 0;
  let droppedAny = false;
  let firstChunkAt: number | null = null;
  let chunksSinceFirst = 0;
  let speedReported = options.onEarlySpeed === undefined;
  const carry = new SurrogateCarry();
  const emit = (text: string) => {
    if (text === '') return;
    options.onText(text);
    // The stored output is bounded in bytes; characters are at most 3 bytes each, so keep
    // collecting until there are surely enough, then stop (the full text was streamed).
    // truncateUtf8 cuts between code points, so never inside a pair.
    if (keptChars <= taskOutputBytesMax) {
      parts.push(text);
      keptChars += text.length;
    } else {
      droppedAny = true;
    }
  };
  const take = (chunk: string) => {
    if (chunk === '') return;
    if (!speedReported) {
      const now = performance.now();
      if (firstChunkAt === null) firstChunkAt = now;
      else if (++chunksSinceFirst >= earlySpeedChunksMin && now - firstChunkAt >= earlySpeedElapsedMsMin) {
        speedReported = true;
        options.onEarlySpeed!(chunksSinceFirst, (now - firstChunkAt) * 1e6);
      }
    }
    emit(carry.push(chunk));
  };
  let final: Record<string, unknown> | null = null;
  try {
    if (request.messages !== null) {
      const messages = request.system === null ? request.messages : [{ role: 'system', content: request.system }, ...request.messages];
      const stream = await client.chat({ ...common, messages });
      for await (const chunk of stream) {
        take(chunk.message?.content ?? '');
        if (chunk.done) final = chunk as unknown as Record<string, unknown>;
      }
    } else {
      const stream = await client.generate({ ...common, prompt: request.prompt ?? '', ...(request.system === null ? {} : { system: request.system }) });
      for await (const chunk of stream) {
        take(chunk.response ?? '');
        if (chunk.done) final = chunk as unknown as Record<string, unknown>;
      }
    }
  } catch (error) {
    clearTimeout(timer);
    emit(carry.end());
    if (options.onUnfinished !== undefined && keptChars > 0) {
      const { text, truncated } = truncateUtf8(parts.join(''), taskOutputBytesMax);
      options.onUnfinished({ output: text, outputTruncated: truncated || droppedAny });
    }
    if (options.signal.aborted) throw options.signal.reason;
    if (timeout.aborted) {
      throw new GenerationError(`the generation on ${request.model} did not finish within the task's timeoutMs of ${options.timeoutMs} ms`, true, { cause: error });
    }
    throw classifyGenerationError(error, options.ollamaUrl, endpoint, options.timeoutMs);
  }
  clearTimeout(timer);
  emit(carry.end());
  if (final === null) {
    throw new GenerationError(`Ollama at ${options.ollamaUrl} ended the ${endpoint} stream without a final chunk`, true);
  }
  const { text, truncated } = truncateUtf8(parts.join(''), taskOutputBytesMax);
  const usage = usageFromFinal(final);
  return {
    output: text,
    outputTruncated: truncated || droppedAny,
    usage,
    evalCount: usage.completionTokens,
    evalDurationNs: finiteNonNegative(final.eval_duration),
  };
}
