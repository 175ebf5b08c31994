// The gateway's engine: places each Ollama/OpenAI request on the best node for its model
// at once (no log entry), and carries it there. On this node it is proxied to the local
// Ollama; on another node it travels over libp2p (GATEWAY_PROTOCOL) and that node
// proxies it to its own Ollama, which listens on its loopback only. The relay's first
// response frame is a JSON head (status, content type); the following frames are the body
// bytes exactly as Ollama produced them, so streaming stays streaming end to end, and
// abandoning the response aborts the remote request and with it the generation.
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import * as limits from '../../protocol/limits.ts';
import { ollamaHttpAgent } from '../tasks/ollama-transport.ts';
import { rankNodesForRequest, type WorkShape } from '../../scheduler/tasks/placement.ts';
import type { NodeView } from '../../scheduler/tasks/node-view.ts';
import { logger } from '../log.ts';
import { latencyBucketsSeconds, metrics as defaultMetrics, type MetricsRegistry } from '../metrics/registry.ts';
import type { Reply, RequestHandlerContext, RequestOptions } from '../p2p/host.ts';

const log = logger('gateway');

// 2.0.0: the answer ends with an empty frame, so a relay cut off by a dead node is told
// apart from a finished one (1.0.0 ended with the stream, which a crash also does).
export const GATEWAY_PROTOCOL = '/hivemesh/gateway/2.0.0';

/**
 * Paths a peer may ask this node's Ollama for, and whether each runs a generation or an
 * embedding (counted in the heartbeat's load). Nothing else is relayed: a peer cannot
 * pull, delete or copy models through the gateway.
 */
export const relayablePaths: Readonly<Record<string, { method: 'GET' | 'POST'; generation: boolean }>> = {
  '/api/chat': { method: 'POST', generation: true },
  '/api/generate': { method: 'POST', generation: true },
  '/api/embed': { method: 'POST', generation: true },
  '/api/embeddings': { method: 'POST', generation: true },
  '/api/show': { method: 'POST', generation: false },
  '/v1/chat/completions': { method: 'POST', generation: true },
  '/v1/completions': { method: 'POST', generation: true },
  '/v1/embeddings': { method: 'POST', generation: true },
};

/** What the relay's first frame says. */
type RelayHead = { ok: true; status: number; contentType: string } | { ok: false; reason: string };

interface RelayRequest {
  method: 'GET' | 'POST';
  path: string;
  /** The JSON body as text. */
  body: string | null;
}

/** The subset of the libp2p host the gateway uses (a fake in unit tests). */
export interface GatewayHost {
  handle(protocol: string, handler: (fromPeerId: string, request: Uint8Array, reply: Reply, context: RequestHandlerContext) => void | Promise<void>): Promise<void>;
  request(peerId: string, protocol: string, bytes: Uint8Array, options?: RequestOptions): AsyncGenerator<Uint8Array, void, undefined>;
}

export interface GatewayOptions {
  host: GatewayHost;
  nodeId: () => string;
  /** This node's Ollama, e.g. http://127.0.0.1:11434. */
  ollamaUrl: string;
  /** The scheduler's view of every known node. */
  nodeViews: () => NodeView[];
  /** Feeds a finished generation's speed to the health probe (heartbeat tokens/s). */
  recordGeneration?: (model: string, tokens: number, evalDurationNs: number) => void;
  /**
   * The name this node's Ollama lists for a model (HealthProbe.installedName): clients may
   * write `Llama3.2`, which current Ollama resolves and older Ollama does not. Default: as asked.
   */
  installedName?: (model: string) => string;
  metrics?: MetricsRegistry;
  requestsInFlightMax?: number;
  inboundRelaysMax?: number;
  requestTimeoutMs?: number;
}

export interface GatewayCall {
  path: string;
  method: 'GET' | 'POST';
  /** Parsed JSON body (POST). */
  body: unknown;
  /** Placement input; the model decides which nodes are candidates. */
  work: WorkShape;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
}

export interface GatewayResponse {
  status: number;
  contentType: string;
  /** The node that answers. */
  nodeId: string;
  /** Body bytes as Ollama produced them; iterate it once. */
  body: AsyncIterable<Uint8Array>;
  /** Frees the request's slot; idempotent, called when the body ends or the client leaves. */
  release(): void;
}

/** No alive node has the model (the client gets Ollama's or OpenAI's 404). */
export class ModelNotFoundError extends Error {
  override name = 'ModelNotFoundError';
  readonly model: string;
  constructor(model: string) {
    super(`model "${model}" not found, try pulling it first`);
    this.model = model;
  }
}

/** Too many gateway requests in flight here, or every candidate node is busy (429). */
export class GatewayBusyError extends Error {
  override name = 'GatewayBusyError';
  readonly retryAfterSeconds = limits.gatewayRetryAfterSeconds;
}

/** Every node tried failed before answering (502). */
export class UpstreamUnavailableError extends Error {
  override name = 'UpstreamUnavailableError';
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A request to this node's Ollama over node:http. The global fetch (undici) gives up on an
 * answer whose headers take over 5 minutes, or that pauses 5 minutes between chunks (a long
 * prompt on a slow host, a non-streamed long answer), and the gateway then ran the request
 * again on another node; the gateway's own bound (gatewayRequestTimeoutMs) applies instead.
 */
function requestOllama(url: URL, method: string, body: string | undefined, signal: AbortSignal): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const secure = url.protocol === 'https:';
    const request = (secure ? https : http).request(url, {
      method,
      // The executor's pool for plain http (one per process); https keeps Node's default agent.
      ...(secure ? {} : { agent: ollamaHttpAgent }),
      headers: body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      signal,
    }, resolve);
    request.on('error', reject);
    request.end(body);
  });
}

/** Splits Ollama's chunks so no relay frame is over the chunk bound. */
function* splitChunk(chunk: Uint8Array): Generator<Uint8Array> {
  for (let offset = 0; offset < chunk.byteLength; offset += limits.gatewayRelayChunkBytesMax) {
    yield chunk.subarray(offset, Math.min(chunk.byteLength, offset + limits.gatewayRelayChunkBytesMax));
  }
}

/** Remembers the last bytes of an Ollama answer, where the final statistics are. */
class TailWatcher {
  private tail = '';
  push(chunk: Uint8Array): void {
    this.tail = (this.tail + decoder.decode(chunk, { stream: true })).slice(-4096);
  }
  /** eval_count and eval_duration of Ollama's final object, when the answer ended with one. */
  evalStats(): { tokens: number; durationNs: number } | null {
    const tokens = /"eval_count"\s*:\s*(\d+)/.exec(this.tail);
    const duration = /"eval_duration"\s*:\s*(\d+)/.exec(this.tail);
    if (tokens === null || duration === null) return null;
    return { tokens: Number(tokens[1]), durationNs: Number(duration[1]) };
  }
}

function describeError(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).message ?? String(error);
}

export class Gateway {
  private readonly options: GatewayOptions;
  private readonly metrics: MetricsRegistry;
  /** Generations and embeddings this node's Ollama runs for the gateway (heartbeat load). */
  private localGenerations = 0;
  /** Requests this node is handling as entry node. */
  private entryRequests = 0;
  private inboundRelays = 0;
  /** Requests this node has sent to each node and not finished: spreads a burst before the next heartbeats. */
  private readonly outstandingByNode = new Map<string, number>();
  private started = false;
  private removeCollector: (() => void) | null = null;

  private readonly requestsTotal;
  private readonly requestSeconds;
  private readonly relaysTotal;
  private readonly tokensTotal;
  private readonly evalSecondsTotal;

  constructor(options: GatewayOptions) {
    this.options = options;
    this.metrics = options.metrics ?? defaultMetrics;
    this.requestsTotal = this.metrics.counter('hivemesh_gateway_requests_total', 'Gateway requests by endpoint and outcome (ok, client_error, upstream_error, not_found, rejected, unavailable, aborted).');
    this.requestSeconds = this.metrics.histogram('hivemesh_gateway_request_duration_seconds', 'Gateway requests from arrival to the end of the response, by endpoint.', latencyBucketsSeconds);
    this.relaysTotal = this.metrics.counter('hivemesh_gateway_relays_total', 'Gateway requests carried over libp2p: direction="out" sent to a peer, "in" served for a peer; by outcome.');
    this.tokensTotal = this.metrics.counter('hivemesh_generation_tokens_total', 'Tokens generated by this node\'s Ollama for gateway requests, by model.');
    this.evalSecondsTotal = this.metrics.counter('hivemesh_generation_eval_seconds_total', 'Seconds this node\'s Ollama spent generating those tokens, by model (tokens/s = rate of tokens / rate of seconds).');
    const inFlight = this.metrics.gauge('hivemesh_gateway_in_flight', 'Gateway requests in flight: role="entry" handled here as entry node, "local" running on this node\'s Ollama, "inbound" relayed here by peers.');
    this.removeCollector = this.metrics.collect(() => {
      inFlight.set({ role: 'entry' }, this.entryRequests);
      inFlight.set({ role: 'local' }, this.localGenerations);
      inFlight.set({ role: 'inbound' }, this.inboundRelays);
    });
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.options.host.handle(GATEWAY_PROTOCOL, (from, request, reply, context) => this.serveRelay(from, request, reply, context));
  }

  stop(): void {
    this.removeCollector?.();
    this.removeCollector = null;
  }

  /** Gateway generations and embeddings running on this node's Ollama now: add to the heartbeat's load.running. */
  inFlight(): number {
    return this.localGenerations;
  }

  /** Counts a finished request in the metrics (the routes call it once per request). */
  recordOutcome(endpoint: string, outcome: string, startedAtMs: number): void {
    this.requestsTotal.inc({ endpoint, outcome });
    this.requestSeconds.observe({ endpoint }, (performance.now() - startedAtMs) / 1000);
  }

  /** Nodes for the work, best first, counting what this node already sent each one. */
  rank(work: WorkShape): NodeView[] {
    const views = this.options.nodeViews().map((node) => {
      const outstanding = this.outstandingByNode.get(node.id) ?? 0;
      // Heartbeats lag by up to a second; until the target reports our requests, count them ourselves.
      return outstanding > node.running ? { ...node, running: outstanding } : node;
    });
    return rankNodesForRequest(work, views).map((entry) => entry.node);
  }

  /**
   * Places the call and opens it on the best node, trying the next-ranked one when a node
   * fails before answering anything (at most gatewayTriesMax nodes). Throws
   * ModelNotFoundError, GatewayBusyError or UpstreamUnavailableError.
   */
  async open(call: GatewayCall): Promise<GatewayResponse> {
    const ranked = this.rank(call.work);
    if (ranked.length === 0) throw new ModelNotFoundError(call.work.model);
    if (this.entryRequests >= (this.options.requestsInFlightMax ?? limits.gatewayRequestsInFlightMax)) {
      throw new GatewayBusyError(`this node already handles ${this.entryRequests} gateway requests, its limit; retry shortly or use another node`);
    }
    this.entryRequests++;
    let handedOver = false;
    const failures: string[] = [];
    let busy = 0;
    try {
      for (const node of ranked.slice(0, limits.gatewayTriesMax)) {
        if (call.signal.aborted) throw call.signal.reason ?? new Error('client went away');
        const nodeId = node.id;
        this.addOutstanding(nodeId, 1);
        let opened: Awaited<ReturnType<Gateway['openRemote']>>;
        try {
          opened = nodeId === this.options.nodeId() ? await this.openLocal(call, call.signal) : await this.openRemote(nodeId, call);
        } catch (error) {
          this.addOutstanding(nodeId, -1);
          if (call.signal.aborted) throw error;
          failures.push(`${nodeId}: ${(error as Error).message}`);
          log.debug('gateway node failed before answering', { node: nodeId, path: call.path, error: error as Error });
          continue;
        }
        if ('reason' in opened) {
          this.addOutstanding(nodeId, -1);
          if (opened.busy) busy++;
          failures.push(`${nodeId}: ${opened.reason}`);
          continue;
        }
        handedOver = true;
        let released = false;
        const release = (): void => {
          if (released) return;
          released = true;
          this.addOutstanding(nodeId, -1);
          this.entryRequests--;
        };
        return { ...opened, nodeId, release };
      }
    } finally {
      if (!handedOver) this.entryRequests--;
    }
    if (busy === Math.min(ranked.length, limits.gatewayTriesMax)) {
      throw new GatewayBusyError(`every node tried for model "${call.work.model}" is at its gateway limit; retry shortly`);
    }
    throw new UpstreamUnavailableError(`no node could serve model "${call.work.model}" (${failures.join('; ')}); check that Ollama runs on those nodes`);
  }

  private addOutstanding(nodeId: string, delta: number): void {
    const count = (this.outstandingByNode.get(nodeId) ?? 0) + delta;
    if (count <= 0) this.outstandingByNode.delete(nodeId);
    else this.outstandingByNode.set(nodeId, count);
  }

  /** The request with its model named as this node's Ollama lists it (options.installedName). */
  private withInstalledName(body: unknown): unknown {
    const installedName = this.options.installedName;
    if (installedName === undefined || typeof body !== 'object' || body === null) return body;
    let renamed: Record<string, unknown> | null = null;
    for (const field of ['model', 'name'] as const) {
      const asked = (body as Record<string, unknown>)[field];
      if (typeof asked !== 'string') continue;
      const installed = installedName(asked);
      if (installed !== asked) (renamed ??= { ...(body as Record<string, unknown>) })[field] = installed;
    }
    return renamed ?? body;
  }

  /** Proxies to this node's Ollama; a connection failure throws (the caller tries another node). */
  private async openLocal(call: Pick<GatewayCall, 'path' | 'method' | 'body'>, signal: AbortSignal): Promise<Omit<GatewayResponse, 'nodeId' | 'release'>> {
    const counted = relayablePaths[call.path]?.generation === true;
    const body = call.method === 'POST' ? JSON.stringify(this.withInstalledName(call.body ?? {})) : undefined;
    if (counted) this.localGenerations++;
    let response: IncomingMessage;
    try {
      response = await requestOllama(new URL(call.path, this.options.ollamaUrl), call.method, body,
        AbortSignal.any([signal, AbortSignal.timeout(limits.gatewayRequestTimeoutMs)]));
    } catch (error) {
      if (counted) this.localGenerations--;
      throw new Error(`Ollama at ${this.options.ollamaUrl} did not answer: ${describeError(error)}`, { cause: error });
    }
    const model = typeof (call.body as { model?: unknown } | null)?.model === 'string' ? (call.body as { model: string }).model : null;
    const status = response.statusCode ?? 502;
    const watchStats = counted && status >= 200 && status < 300 && model !== null && (call.path === '/api/chat' || call.path === '/api/generate');
    const record = this.options.recordGeneration;
    const tokensTotal = this.tokensTotal;
    const evalSecondsTotal = this.evalSecondsTotal;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      if (counted) this.localGenerations--;
    };
    const source = response;
    async function* bytes(): AsyncGenerator<Uint8Array> {
      const tail = new TailWatcher();
      try {
        for await (const chunk of source as AsyncIterable<Uint8Array>) {
          if (watchStats) tail.push(chunk);
          yield chunk;
        }
        const stats = watchStats ? tail.evalStats() : null;
        if (stats !== null && model !== null && stats.durationNs > 0) {
          tokensTotal.inc({ model }, stats.tokens);
          evalSecondsTotal.inc({ model }, stats.durationNs / 1e9);
          record?.(model, stats.tokens, stats.durationNs);
        }
      } finally {
        finish();
        // An abandoned answer must not keep Ollama generating.
        if (!source.complete) source.destroy();
      }
    }
    const iterator = bytes();
    // A body nobody reads (the client left before it started) must still free its count.
    signal.addEventListener('abort', () => { finish(); void iterator.return(undefined); }, { once: true });
    return { status, contentType: response.headers['content-type'] ?? 'application/json; charset=utf-8', body: iterator };
  }

  private async openRemote(nodeId: string, call: GatewayCall): Promise<Omit<GatewayResponse, 'nodeId' | 'release'> | { reason: string; busy: boolean }> {
    const request: RelayRequest = { method: call.method, path: call.path, body: call.method === 'POST' ? JSON.stringify(call.body ?? {}) : null };
    const frames = this.options.host.request(nodeId, GATEWAY_PROTOCOL, encoder.encode(JSON.stringify(request)), {
      signal: call.signal,
      timeoutMs: this.options.requestTimeoutMs ?? limits.gatewayRequestTimeoutMs,
    });
    let first: IteratorResult<Uint8Array, void>;
    try {
      first = await frames.next();
    } catch (error) {
      this.relaysTotal.inc({ direction: 'out', outcome: 'failed' });
      throw error;
    }
    if (first.done === true) {
      this.relaysTotal.inc({ direction: 'out', outcome: 'failed' });
      throw new Error('the node ended the relay without an answer');
    }
    const head = JSON.parse(decoder.decode(first.value)) as RelayHead;
    if (!head.ok) {
      this.relaysTotal.inc({ direction: 'out', outcome: 'refused' });
      return { reason: head.reason, busy: /busy/.test(head.reason) };
    }
    this.relaysTotal.inc({ direction: 'out', outcome: 'opened' });
    async function* body(): AsyncGenerator<Uint8Array> {
      try {
        for (;;) {
          const next = await frames.next();
          if (next.done === true) throw new Error(`the node serving this answer (${nodeId}) stopped before finishing it`);
          if (next.value.byteLength === 0) return; // the end marker: the answer is whole
          yield next.value;
        }
      } finally {
        // Ends the relay stream early when the client stops reading: the remote aborts.
        await frames.return(undefined).catch(() => undefined);
      }
    }
    return { status: head.status, contentType: head.contentType, body: body() };
  }

  /** A peer's relayed request: proxied to this node's Ollama, the answer streamed back. */
  private async serveRelay(from: string, bytes: Uint8Array, reply: Reply, context: RequestHandlerContext): Promise<void> {
    const refuse = async (reason: string): Promise<void> => {
      this.relaysTotal.inc({ direction: 'in', outcome: 'refused' });
      await reply.send(encoder.encode(JSON.stringify({ ok: false, reason } satisfies RelayHead)));
    };
    let request: RelayRequest;
    try {
      request = JSON.parse(decoder.decode(bytes)) as RelayRequest;
    } catch {
      return refuse('the relay request is not JSON');
    }
    const allowed = relayablePaths[request.path];
    if (allowed === undefined || allowed.method !== request.method) {
      return refuse(`${String(request.method)} ${String(request.path)} is not relayed by the gateway`);
    }
    if (this.inboundRelays >= (this.options.inboundRelaysMax ?? limits.gatewayInboundRelaysMax)) {
      return refuse(`busy: this node already serves ${this.inboundRelays} relayed gateway requests`);
    }
    let body: unknown = null;
    try {
      body = request.body === null ? null : JSON.parse(request.body);
    } catch {
      return refuse('the relayed body is not JSON');
    }
    this.inboundRelays++;
    try {
      let opened: Awaited<ReturnType<Gateway['openLocal']>>;
      try {
        opened = await this.openLocal({ path: request.path, method: request.method, body }, context.signal);
      } catch (error) {
        return await refuse((error as Error).message);
      }
      this.relaysTotal.inc({ direction: 'in', outcome: 'opened' });
      await reply.send(encoder.encode(JSON.stringify({ ok: true, status: opened.status, contentType: opened.contentType } satisfies RelayHead)));
      for await (const chunk of opened.body) {
        for (const piece of splitChunk(chunk)) await reply.send(piece);
      }
      // The end marker (no piece is empty): the answer is whole.
      await reply.send(new Uint8Array(0));
      await reply.end();
    } catch (error) {
      if (!context.signal.aborted) log.debug('relayed gateway request failed', { from, path: request.path, error: error as Error });
      throw error;
    } finally {
      this.inboundRelays--;
    }
  }
}
