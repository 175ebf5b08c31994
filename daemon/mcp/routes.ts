// The MCP endpoint (/mcp, Streamable HTTP, stateless). Same bearer tokens and roles as the
// HTTP API; the Origin header of browser requests must match the node. The tools and the
// SDK load on first use, so a daemon nobody connects an MCP client to does not carry them.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import type { App } from '../http/app.ts';
import { sendError } from '../http/app.ts';
import type { McpDeps } from './tools.ts';

export type { McpDeps };

/** Browsers send Origin; only pages served by this node (or localhost) may call MCP. */
export function originAllowed(origin: string | undefined, host: string | undefined): boolean {
  if (origin === undefined || origin === 'null') return origin === undefined;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  if (host !== undefined && url.host === host) return true;
  return url.hostname === 'localhost' || url.hostname === '127.0.0.1' || url.hostname === '[::1]';
}

/**
 * The longest wait answered as one JSON response. Its headers leave only with the answer, and
 * Node's fetch (undici, which the MCP SDK client uses) gives up on headers after 300 s; a
 * longer wait is answered as an SSE stream, whose keep-alive comments hold the connection.
 */
export const mcpJsonWaitMsMax = 240_000;

/**
 * Whether to answer this POST as one JSON response rather than an SSE stream. The MCP SDK
 * client rejects a call at once when the connection of a JSON answer breaks (the node died),
 * but leaves it pending until its own timeout when an SSE answer breaks before the result
 * (typescript-sdk#2739): so JSON, unless a request asked for progress notifications (they
 * need the stream) or for a wait beyond mcpJsonWaitMsMax.
 */
export function answerAsJson(body: unknown): boolean {
  for (const message of Array.isArray(body) ? body : [body]) {
    const params = (message as { params?: unknown } | null)?.params;
    if (typeof params !== 'object' || params === null) continue;
    const { _meta: meta, name, arguments: args } = params as { _meta?: { progressToken?: unknown }; name?: unknown; arguments?: Record<string, unknown> };
    if (meta?.progressToken !== undefined) return false;
    if ((message as { method?: unknown }).method !== 'tools/call') continue;
    // Without a wait of its own a call blocks 45 s at most (tools.ts), well within the bound.
    const wait = name === 'wait_for_task' ? args?.timeoutMs : name === 'run_prompt' ? args?.waitMs : undefined;
    if (typeof wait === 'number' && wait > mcpJsonWaitMsMax) return false;
  }
  return true;
}

export function mcpRoutes(deps: McpDeps) {
  return async (app: App) => {
    // A stop waits for the requests in flight: the waiting tools answer at once instead of
    // holding it for their whole wait (up to 10 minutes).
    const closing = new AbortController();
    app.addHook('preClose', async () => closing.abort());
    const handle = async (request: FastifyRequest, reply: FastifyReply) => {
      if (!originAllowed(request.headers.origin, request.headers.host)) {
        return sendError(reply, new HivemeshError(ErrorCode.forbidden, `Origin ${request.headers.origin} may not use this MCP endpoint; connect from a client (Claude Code) or a page served by this node`));
      }
      const principal = request.principal!;
      const [{ buildServer }, { StreamableHTTPServerTransport }] = await Promise.all([
        import('./tools.ts'),
        import('@modelcontextprotocol/sdk/server/streamableHttp.js'),
      ]);
      const server = buildServer(deps, principal, closing.signal);
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: answerAsJson(request.body) });
      reply.hijack();
      reply.raw.on('close', () => {
        void transport.close();
        void server.close();
      });
      await server.connect(transport);
      await transport.handleRequest(request.raw, reply.raw, request.body);
    };
    app.post('/mcp', { config: { action: 'read' } }, handle);
    // Stateless: no server-initiated stream and no sessions to delete.
    const notAllowed = async (_request: FastifyRequest, reply: FastifyReply) =>
      reply.code(405).header('allow', 'POST').send({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed: this MCP endpoint is stateless; use POST' }, id: null });
    app.get('/mcp', { config: { action: 'read' } }, notAllowed);
    app.delete('/mcp', { config: { action: 'read' } }, notAllowed);
  };
}
