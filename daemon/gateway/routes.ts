// The gateway's HTTP routes: a drop-in endpoint for Ollama clients (/api/chat, /api/generate,
// /api/embed, /api/embeddings, /api/show, /api/tags, /api/ps, /api/version) and OpenAI
// clients (/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models) on the node's one
// port. Generation and embedding requests go to the best node for their model (gateway.ts);
// model lists come from the heartbeats. Bodies are passed through as Ollama takes them
// (Ollama accepts fields this code does not know), so only `model` is checked here; every
// error is answered in the shape of the API the client speaks, hivemesh's own 401/403/413
// included.
import { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { AgentsStatus } from '../../protocol/api.ts';
import { gatewayStopDrainMs, httpBodyBytesMax } from '../../protocol/limits.ts';
import { sameModel } from '../../scheduler/tasks/node-view.ts';
import type { App } from '../http/app.ts';
import { OriginPolicy } from './cors.ts';
import { GatewayBusyError, ModelNotFoundError, UpstreamUnavailableError, relayablePaths, type Gateway } from './gateway.ts';
import {
  embeddingsAsBase64, modelNotFoundMessage, ollamaError, ollamaPs, ollamaTags, openaiError, openaiErrorType, openaiModels, workShapeOfRequest,
  type GatewayFlavor,
} from './shapes.ts';

export interface GatewayRouteDeps {
  gateway: Gateway;
  /** Every known node with its models, state and Ollama version (from heartbeats). */
  agentsStatus: () => AgentsStatus;
  /** How long a stop lets answers in flight finish before cutting them (tests shorten it). */
  stopDrainMs?: number;
  /** Which web pages may read the gateway's answers from a browser (default: Ollama's origins). */
  origins?: OriginPolicy;
}

function flavorOf(url: string): GatewayFlavor {
  return url.startsWith('/v1/') ? 'openai' : 'ollama';
}

function errorBody(flavor: GatewayFlavor, status: number, message: string, code: string | null = null) {
  return flavor === 'ollama' ? ollamaError(message) : openaiError(message, openaiErrorType(status), code);
}

const encoder = new TextEncoder();

/**
 * An answer that breaks off (the serving node or its Ollama died mid-stream) must not look
 * finished: a streamed one gets a last error line, as Ollama and OpenAI send one, and then
 * the connection is dropped (the error goes on to the response stream), so a client that
 * ignores the line still sees a failed read.
 */
async function* cutOffSignalled(body: AsyncIterable<Uint8Array>, contentType: string, flavor: GatewayFlavor, clientGone: AbortSignal): AsyncGenerator<Uint8Array> {
  try {
    yield* body;
  } catch (error) {
    if (clientGone.aborted) throw error;
    const message = `the answer was cut off: ${(error as Error).message}`;
    if (/ndjson/.test(contentType)) yield encoder.encode(`${JSON.stringify(ollamaError(message))}\n`);
    else if (/event-stream/.test(contentType)) yield encoder.encode(`data: ${JSON.stringify(openaiError(message, 'server_error', null))}\n\n`);
    throw error;
  }
}

function sendGatewayError(reply: FastifyReply, flavor: GatewayFlavor, status: number, message: string, code: string | null = null): FastifyReply {
  return reply.code(status).type('application/json; charset=utf-8').send(errorBody(flavor, status, message, code));
}

/** Ollama's own loose JSON reading: any content type, an empty body is `{}`. */
function parseLooseJson(_request: FastifyRequest, body: string, done: (error: Error | null, value?: unknown) => void): void {
  if (body.trim() === '') return done(null, {});
  try {
    done(null, JSON.parse(body));
  } catch (error) {
    const failure = new Error(`invalid JSON body: ${(error as Error).message}`) as Error & { statusCode: number };
    failure.statusCode = 400;
    done(failure);
  }
}

/** An embeddings answer read whole to convert it (2,048 inputs of 4,096 dimensions are ~170 MB as JSON numbers). */
const embeddingsAnswerBytesMax = 512 * 1024 * 1024;

async function readAnswer(body: AsyncIterable<Uint8Array>, bytesMax: number): Promise<string> {
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  for await (const chunk of body) {
    bytes += chunk.byteLength;
    if (bytes > bytesMax) throw new Error(`it is over ${bytesMax} bytes; ask for encoding_format "float", or fewer inputs at once`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export function gatewayRoutes(deps: GatewayRouteDeps) {
  return async (app: App): Promise<void> => {
    const { gateway } = deps;
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', { parseAs: 'string', bodyLimit: httpBodyBytesMax }, parseLooseJson);

    // hivemesh's errors (401, 403, 413, 400 from the shared hooks) in the client's shape.
    app.addHook('onSend', async (request, reply, payload) => {
      if (reply.statusCode < 400 || typeof payload !== 'string') return payload;
      let parsed: unknown;
      try {
        parsed = JSON.parse(payload);
      } catch {
        return payload;
      }
      const error = (parsed as { error?: unknown }).error;
      if (typeof error !== 'object' || error === null || 'type' in error) return payload;
      const { code, message } = error as { code?: unknown; message?: unknown };
      if (typeof message !== 'string') return payload;
      return JSON.stringify(errorBody(flavorOf(request.url), reply.statusCode, message, typeof code === 'string' ? code : null));
    });

    // Browsers: pages of an allowed origin may read the answers (refusals included, so a page
    // sees "401 missing bearer token" rather than an opaque CORS failure).
    const origins = deps.origins ?? new OriginPolicy();
    app.addHook('onSend', async (request, reply, payload) => {
      const origin = request.headers.origin;
      if (typeof origin === 'string' && origins.allows(origin)) {
        reply.header('access-control-allow-origin', origin).header('access-control-expose-headers', 'x-hivemesh-node, retry-after');
      }
      if (origin !== undefined) reply.header('vary', 'Origin');
      return payload;
    });
    const gatewayApiPaths = new Set(['/api/chat', '/api/generate', '/api/embed', '/api/embeddings', '/api/show', '/api/tags', '/api/ps', '/api/version',
      '/api/pull', '/api/push', '/api/create', '/api/copy', '/api/delete']);
    for (const pattern of ['/api/*', '/v1/*']) {
      // A preflight carries no token: it is answered before any authentication.
      app.options(pattern, async (request, reply) => {
        const path = request.url.split('?')[0]!;
        if (!path.startsWith('/v1/') && !gatewayApiPaths.has(path) && !path.startsWith('/api/blobs/')) {
          return reply.callNotFound();
        }
        const origin = request.headers.origin;
        if (typeof origin === 'string' && !origins.allows(origin)) {
          return sendGatewayError(reply, flavorOf(path), 403,
            `web pages of ${origin} may not call this node from a browser; start the node with --allow-origin ${origin} (localhost pages, app webviews and browser extensions may already)`, 'origin_not_allowed');
        }
        const asked = request.headers['access-control-request-headers'];
        reply.code(204)
          .header('access-control-allow-methods', 'GET, POST, DELETE, HEAD, OPTIONS')
          .header('access-control-allow-headers', typeof asked === 'string' && /^[\w\s,*-]{1,2000}$/.test(asked) ? asked : 'Authorization, Content-Type, Accept, User-Agent, X-Requested-With')
          .header('access-control-max-age', '43200');
        return reply.send();
      });
    }

    // A graceful stop waits for the requests in flight, and an answer may stream for an hour:
    // those still running after a short drain are cut (the client sees a broken answer, never
    // a silently short one), so the stop does not wait for them.
    const answering = new Set<FastifyReply>();
    app.addHook('preClose', async () => {
      const deadline = Date.now() + (deps.stopDrainMs ?? gatewayStopDrainMs);
      while (answering.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      for (const reply of answering) reply.raw.destroy();
    });

    const proxy = async (request: FastifyRequest, reply: FastifyReply, path: string, modelField: 'model' | 'model-or-name') => {
      const startedAtMs = performance.now();
      const flavor = flavorOf(path);
      const body = request.body;
      if (typeof body !== 'object' || body === null || Array.isArray(body)) {
        gateway.recordOutcome(path, 'client_error', startedAtMs);
        return sendGatewayError(reply, flavor, 400, 'the request body must be a JSON object');
      }
      const fields = body as Record<string, unknown>;
      const model = typeof fields.model === 'string' && fields.model !== '' ? fields.model
        : modelField === 'model-or-name' && typeof fields.name === 'string' && fields.name !== '' ? fields.name : null;
      if (model === null) {
        gateway.recordOutcome(path, 'client_error', startedAtMs);
        return sendGatewayError(reply, flavor, 400, flavor === 'ollama' ? 'model is required' : 'you must provide a model parameter', flavor === 'openai' ? 'missing_model' : null);
      }
      const controller = new AbortController();
      answering.add(reply);
      reply.raw.on('close', () => {
        answering.delete(reply);
        if (!reply.raw.writableFinished) controller.abort(new Error('the client went away'));
      });
      let response;
      try {
        response = await gateway.open({
          path,
          method: 'POST',
          body: fields,
          work: relayablePaths[path]?.generation === true ? workShapeOfRequest(path, fields, model) : { model, promptCharacters: 0, outputTokens: 1 },
          signal: controller.signal,
        });
      } catch (error) {
        if (controller.signal.aborted) {
          gateway.recordOutcome(path, 'aborted', startedAtMs);
          return reply;
        }
        if (error instanceof ModelNotFoundError) {
          gateway.recordOutcome(path, 'not_found', startedAtMs);
          // Ollama's words, which clients may match; but a node whose Ollama is down lists no
          // models, so the model may well be there: pulling is then not the remedy.
          const ollamaDown = deps.agentsStatus().nodes.filter((node) => node.state === 'alive' && !node.ollama.reachable).map((node) => node.name);
          const hint = ollamaDown.length === 0 ? ''
            : ` (the Ollama of ${ollamaDown.join(', ')} does not answer, so that node's models are not counted; \`hivemesh nodes\` shows each node's Ollama)`;
          return sendGatewayError(reply, flavor, 404, `${modelNotFoundMessage(model)}${hint}`, 'model_not_found');
        }
        if (error instanceof GatewayBusyError) {
          gateway.recordOutcome(path, 'rejected', startedAtMs);
          reply.header('retry-after', String(error.retryAfterSeconds));
          return sendGatewayError(reply, flavor, 429, error.message, 'rate_limited');
        }
        if (error instanceof UpstreamUnavailableError) {
          gateway.recordOutcome(path, 'unavailable', startedAtMs);
          return sendGatewayError(reply, flavor, 502, error.message);
        }
        throw error;
      }
      const opened = response;
      if (controller.signal.aborted) {
        // The client left while the node was being reached: nobody will read this answer.
        opened.release();
        void opened.body[Symbol.asyncIterator]().return?.();
        gateway.recordOutcome(path, 'aborted', startedAtMs);
        return reply;
      }
      reply.raw.on('close', () => {
        opened.release();
        const outcome = !reply.raw.writableFinished ? 'aborted' : opened.status < 400 ? 'ok' : opened.status < 500 ? 'client_error' : 'upstream_error';
        gateway.recordOutcome(path, outcome, startedAtMs);
      });
      reply.code(opened.status).header('content-type', opened.contentType).header('x-hivemesh-node', opened.nodeId);
      // Streamed answers must reach the client as they are produced: no buffering proxy between.
      if (/ndjson|event-stream/.test(opened.contentType)) reply.header('cache-control', 'no-cache').header('x-accel-buffering', 'no');
      if (path === '/v1/embeddings' && fields.encoding_format === 'base64' && opened.status === 200) {
        // One JSON answer, not a stream: read it whole and give each vector in the form asked for.
        let text: string;
        try {
          text = await readAnswer(opened.body, embeddingsAnswerBytesMax);
        } catch (error) {
          if (controller.signal.aborted) return reply;
          return sendGatewayError(reply, flavor, 502, `the embeddings answer could not be read: ${(error as Error).message}`);
        }
        return reply.send(embeddingsAsBase64(text) ?? text);
      }
      return reply.send(Readable.from(cutOffSignalled(opened.body, opened.contentType, flavor, controller.signal), { objectMode: false }));
    };

    const generationRoutes: Array<[string, 'model' | 'model-or-name', 'submit' | 'read']> = [
      ['/api/chat', 'model', 'submit'],
      ['/api/generate', 'model', 'submit'],
      ['/api/embed', 'model', 'submit'],
      // The legacy embedding endpoint older clients (and LangChain's Ollama class) still call.
      ['/api/embeddings', 'model', 'submit'],
      ['/api/show', 'model-or-name', 'read'],
      ['/v1/chat/completions', 'model', 'submit'],
      ['/v1/completions', 'model', 'submit'],
      ['/v1/embeddings', 'model', 'submit'],
    ];
    for (const [path, modelField, action] of generationRoutes) {
      app.post(path, { config: { action } }, (request, reply) => proxy(request, reply, path, modelField));
    }

    const listed = (path: string, answer: () => unknown) => {
      app.get(path, { config: { action: 'read' } }, async (_request, reply) => {
        const startedAtMs = performance.now();
        const body = answer();
        gateway.recordOutcome(path, 'ok', startedAtMs);
        return reply.type('application/json; charset=utf-8').send(body);
      });
    };
    listed('/api/tags', () => ollamaTags(deps.agentsStatus().nodes));
    listed('/api/ps', () => ollamaPs(deps.agentsStatus().nodes));
    listed('/v1/models', () => openaiModels(deps.agentsStatus().nodes));

    app.get<{ Params: { model: string } }>('/v1/models/:model', { config: { action: 'read' } }, async (request, reply) => {
      const startedAtMs = performance.now();
      const found = openaiModels(deps.agentsStatus().nodes).data.find((model) => sameModel(model.id, request.params.model));
      if (found === undefined) {
        gateway.recordOutcome('/v1/models/:model', 'not_found', startedAtMs);
        return sendGatewayError(reply, 'openai', 404, modelNotFoundMessage(request.params.model), 'model_not_found');
      }
      gateway.recordOutcome('/v1/models/:model', 'ok', startedAtMs);
      return reply.send(found);
    });

    // Ollama's model management and other OpenAI routes are not served; their clients get
    // the answer in their own error shape (the catch-all 404 is hivemesh's shape).
    const notServed = (method: 'POST' | 'DELETE' | 'HEAD' | 'GET', path: string, message: string | ((request: FastifyRequest) => string)) => {
      app.route({ method, url: path, config: { action: 'read' }, handler: async (request, reply) =>
        sendGatewayError(reply, flavorOf(path), 404, typeof message === 'string' ? message : message(request)) });
    };
    const manage = 'hivemesh does not manage models through its gateway: run `ollama pull MODEL` (or rm, create, cp) on a node; its models then appear in /api/tags';
    for (const path of ['/api/pull', '/api/push', '/api/create', '/api/copy']) notServed('POST', path, `${path}: ${manage}`);
    notServed('DELETE', '/api/delete', `/api/delete: ${manage}`);
    notServed('HEAD', '/api/blobs/:digest', `/api/blobs: ${manage}`);
    notServed('POST', '/api/blobs/:digest', `/api/blobs: ${manage}`);
    for (const method of ['GET', 'POST', 'DELETE'] as const) {
      // Named with its method, as OpenAI does ("Invalid URL (GET /v1/...)"): a GET of
      // /v1/chat/completions is a wrong method, not a path hivemesh lacks.
      notServed(method, '/v1/*', (request) => `Invalid URL (${request.method} ${request.url.split('?')[0]}): hivemesh serves POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, GET /v1/models and GET /v1/models/MODEL`);
    }

    // An OpenAI client given the node's address without /v1 (or with /api) as its base URL
    // asks for /chat/completions or /api/models: tell it the base URL, in its own shape.
    const openaiBase = (request: FastifyRequest) => `Invalid URL (${request.method} ${request.url.split('?')[0]}): give OpenAI clients the base URL http://${request.headers.host ?? 'HOST:7420'}/v1 (the OpenAI API is under /v1 here)`;
    for (const path of ['/chat/completions', '/completions', '/embeddings', '/api/chat/completions', '/api/completions']) {
      app.post(path, { config: { action: 'read' } }, async (request, reply) => sendGatewayError(reply, 'openai', 404, openaiBase(request)));
    }
    for (const path of ['/models', '/models/*', '/api/models', '/api/models/*']) {
      app.get(path, { config: { action: 'read' } }, async (request, reply) => sendGatewayError(reply, 'openai', 404, openaiBase(request)));
    }

    app.get('/api/version', { config: { action: 'read' } }, async (_request, reply) => {
      const startedAtMs = performance.now();
      const nodes = deps.agentsStatus().nodes;
      // This node's Ollama version when it is up, else any alive node's: clients check it for features.
      const self = nodes.find((node) => node.self && node.ollama.version !== null);
      const other = nodes.find((node) => node.state === 'alive' && node.ollama.reachable && node.ollama.version !== null);
      const version = self?.ollama.version ?? other?.ollama.version ?? null;
      if (version === null) {
        gateway.recordOutcome('/api/version', 'unavailable', startedAtMs);
        reply.header('retry-after', '5');
        return sendGatewayError(reply, 'ollama', 503, 'no Ollama in the cluster is reachable yet; start Ollama on a node (hivemesh nodes shows each one\'s Ollama state)');
      }
      gateway.recordOutcome('/api/version', 'ok', startedAtMs);
      return reply.send({ version });
    });
  };
}
