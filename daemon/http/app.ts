// Builds the fastify application every node serves on one port: health, the HTTP API,
// (later) the gateway, MCP, metrics and the dashboard. `buildApp` only builds; `listen`
// happens in the daemon, so tests use `app.inject()` with no port.
import { Ajv } from 'ajv';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { ErrorCode, HivemeshError, httpStatusOf } from '../../protocol/errors.ts';
import { httpBodyBytesMax } from '../../protocol/limits.ts';
import { actionWords } from '../../protocol/tokens.ts';
import type { Action, HttpServices, Principal } from './services.ts';
import { statusRoutes } from './routes/status.ts';
import { staticRoutes } from './routes/static.ts';
import { endSseStreams } from './sse.ts';

const ajvOptions = { allErrors: true, removeAdditional: false, useDefaults: true, strict: false } as const;
const strictAjv = new Ajv({ ...ajvOptions, coerceTypes: false });
const coercingAjv = new Ajv({ ...ajvOptions, coerceTypes: 'array' });

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
    /** Whether the request's token still may do the route's action (revoked since?): long streams ask. */
    stillAllowed: (() => boolean) | null;
  }
  interface FastifyContextConfig {
    /** What the route does, for role checks; routes without one need no token. */
    action?: Action;
  }
}

export type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface BuildAppOptions {
  services: HttpServices;
  /** Extra route plugins (gateway, MCP, tasks) registered by the daemon. */
  plugins?: Array<(app: App) => void | Promise<void>>;
  logRequests?: boolean;
}

export function sendError(reply: FastifyReply, error: HivemeshError): FastifyReply {
  if (error.retryAfterSeconds !== undefined) reply.header('retry-after', String(Math.max(1, Math.ceil(error.retryAfterSeconds))));
  // The contract's shape on every error: details is null when there is nothing more to say.
  const body = { error: { code: error.code, message: error.message, details: error.details ?? null } };
  return reply.code(httpStatusOf[error.code]).type('application/json; charset=utf-8').send(body);
}

/**
 * Fastify's validation errors, turned into "which field and why", one reason per field. A
 * field that must be one of fixed values (a union of constants, which the validator reports
 * as one failed constant per choice and a failed anyOf) says which values are allowed.
 */
function validationDetails(error: FastifyError): Array<{ field: string; reason: string }> {
  const fields = new Map<string, { reason: string | null; allowed: unknown[] }>();
  for (const item of error.validation ?? []) {
    const params = item.params as Record<string, unknown>;
    const base = (item.instancePath || '').replace(/^\//, '').replace(/\//g, '.');
    let field = base || (error.validationContext ?? 'body');
    let reason: string | null = item.message ?? 'is invalid';
    if (item.keyword === 'additionalProperties') {
      field = [base, String(params.additionalProperty)].filter(Boolean).join('.');
      reason = 'is not a known field';
    } else if (item.keyword === 'required') {
      field = [base, String(params.missingProperty)].filter(Boolean).join('.');
      reason = 'is required';
    }
    const entry = fields.get(field) ?? { reason: null, allowed: [] };
    fields.set(field, entry);
    if (item.keyword === 'const') entry.allowed.push(params.allowedValue);
    else if (item.keyword === 'enum' && Array.isArray(params.allowedValues)) entry.allowed.push(...(params.allowedValues as unknown[]));
    else if (item.keyword !== 'anyOf' && entry.reason === null) entry.reason = reason;
  }
  return [...fields].map(([field, { reason, allowed }]) => ({
    field,
    reason: allowed.length > 0 ? `must be one of ${allowed.map((value) => JSON.stringify(value)).join(', ')}` : reason ?? 'is invalid',
  }));
}

function bearerToken(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match ? match[1]! : null;
}

export async function buildApp(options: BuildAppOptions): Promise<App> {
  const { services } = options;
  const app = Fastify({
    logger: false,
    bodyLimit: httpBodyBytesMax,
    // Connections from browsers and CLIs are short; SSE streams manage their own life.
    keepAliveTimeout: 10_000,
    return503OnClosing: true,
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Bodies are JSON and must carry the right types ("5" is not a priority); query strings
  // and path parameters are text by nature, so they are coerced to the declared types.
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strictAjv : coercingAjv).compile(schema));

  app.decorateRequest('principal', null);
  app.decorateRequest('stillAllowed', null);
  // A stop waits for the requests in flight; event streams would hold it for ever.
  app.addHook('preClose', async () => endSseStreams(app.server));

  // Many clients send `content-type: application/json` on every request, a DELETE or GET
  // without a body included: that is not an empty JSON body to refuse, it is no body.
  app.addHook('onRequest', async (request) => {
    if ((request.method === 'DELETE' || request.method === 'GET' || request.method === 'HEAD')
      && request.headers['transfer-encoding'] === undefined && Number(request.headers['content-length'] ?? 0) === 0) {
      delete request.headers['content-type'];
    }
  });

  app.addHook('onRequest', async (request, reply) => {
    const action = request.routeOptions.config?.action;
    if (action === undefined) return;
    const token = bearerToken(request);
    if (token === null) {
      return sendError(reply, new HivemeshError(ErrorCode.unauthorized,
        'missing bearer token: send the header "Authorization: Bearer <token>". The admin token is in <data-dir>/admin.token on any node; `hivemesh token create` makes others.'));
    }
    const principal = services.authenticate(token) ?? await services.authenticateAfterCatchUp?.(token) ?? null;
    if (principal === null) {
      return sendError(reply, new HivemeshError(ErrorCode.unauthorized, 'the bearer token is not valid on this cluster (mistyped, revoked, or from another cluster)'));
    }
    if (!services.can(principal.role, action)) {
      return sendError(reply, new HivemeshError(ErrorCode.forbidden, `a token with role "${principal.role}" may not ${actionWords[action]}; ask an admin for a token with a role that may`));
    }
    request.principal = principal;
    request.stillAllowed = () => {
      const now = services.authenticate(token);
      return now !== null && services.can(now.role, action);
    };
  });

  app.setErrorHandler((error: FastifyError | HivemeshError | Error, request, reply) => {
    if (error instanceof HivemeshError) return sendError(reply, error);
    const fastifyError = error as FastifyError;
    if (fastifyError.validation) {
      const details = validationDetails(fastifyError);
      const message = details.map((detail) => `${detail.field}: ${detail.reason}`).join('; ');
      return sendError(reply, new HivemeshError(ErrorCode.invalidInput, `invalid ${fastifyError.validationContext ?? "request"}: ${message}`, { details: { fields: details } }));
    }
    switch (fastifyError.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return sendError(reply, new HivemeshError(ErrorCode.payloadTooLarge, `the request body is over the ${httpBodyBytesMax}-byte limit`));
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return sendError(reply, new HivemeshError(ErrorCode.invalidInput, `unsupported Content-Type ${JSON.stringify(request.headers['content-type'] ?? '')}; send application/json`));
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
        return sendError(reply, new HivemeshError(ErrorCode.invalidInput, 'the body is empty; send a JSON object'));
      case 'FST_ERR_CTP_INVALID_JSON_BODY':
        return sendError(reply, new HivemeshError(ErrorCode.invalidInput, `the body is not valid JSON: ${fastifyError.message}`));
    }
    if (fastifyError.statusCode !== undefined && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
      const code = fastifyError.statusCode === 413 ? ErrorCode.payloadTooLarge : ErrorCode.invalidInput;
      return sendError(reply, new HivemeshError(code, fastifyError.message));
    }
    request.log.error(error);
    services.reportInternalError(error, `${request.method} ${request.url}`);
    return sendError(reply, new HivemeshError(ErrorCode.internal, 'internal error; the node logged the details'));
  });

  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new HivemeshError(ErrorCode.notFound, `no route ${request.method} ${request.url.split('?')[0]}; see the API list in the README`)));

  await app.register(statusRoutes(services));
  await app.register(staticRoutes());
  for (const plugin of options.plugins ?? []) await app.register(async (scope) => plugin(scope as App));
  return app;
}
