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

export function mcpRoutes(deps: McpDeps) {
  return async (app: App) => {
    const handle = async (request: FastifyRequest, reply: FastifyReply) => {
      if (!originAllowed(request.headers.origin, request.headers.host)) {
        return sendError(reply, new HivemeshError(ErrorCode.forbidden, `Origin ${request.headers.origin} may not use this MCP endpoint; connect from a client (Claude Code) or a page served by this node`));
      }
      const principal = request.principal!;
      const [{ buildServer }, { StreamableHTTPServerTransport }] = await Promise.all([
        import('./tools.ts'),
        import('@modelcontextprotocol/sdk/server/streamableHttp.js'),
      ]);
      const server = buildServer(deps, principal);
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: false });
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
