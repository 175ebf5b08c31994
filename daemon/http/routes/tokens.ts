// Token routes: management, admin only (POST /api/tokens, GET /api/tokens, DELETE
// /api/tokens/:id), and GET /api/tokens/self, where any valid token learns its own role
// and what that role may do (the dashboard hides the actions it would be refused).
import { Type } from '@sinclair/typebox';
import { ErrorBody } from '../../../protocol/api.ts';
import { ErrorCode, HivemeshError } from '../../../protocol/errors.ts';
import { TokenCreate, TokenId, TokenSelf, TokenView, permissions } from '../../../protocol/tokens.ts';
import type { TokenService } from '../../tokens.ts';
import type { App } from '../app.ts';

const CreatedToken = Type.Intersect([TokenView, Type.Object({ token: Type.String() })]);
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody };

export function tokenRoutes(tokens: TokenService) {
  return async (app: App) => {
    app.post('/api/tokens', { config: { action: 'manageTokens' }, schema: { body: TokenCreate, response: { 201: CreatedToken, ...errors } } }, async (request, reply) =>
      reply.code(201).send(await tokens.create(request.body.role, request.body.name)));

    app.get('/api/tokens', { config: { action: 'manageTokens' }, schema: { response: { 200: Type.Object({ tokens: Type.Array(TokenView) }), ...errors } } }, async () =>
      ({ tokens: tokens.list() }));

    app.get('/api/tokens/self', { config: { action: 'read' }, schema: { response: { 200: TokenSelf, ...errors } } }, async (request) => {
      const principal = request.principal;
      // The auth hook sets the principal on every route with an action; without one this is a bug.
      if (principal === null) throw new HivemeshError(ErrorCode.internal, 'GET /api/tokens/self ran without an authenticated token');
      return { id: principal.tokenId, name: principal.name, role: principal.role, actions: [...permissions[principal.role]] };
    });

    app.delete('/api/tokens/:id', { config: { action: 'manageTokens' }, schema: { params: Type.Object({ id: TokenId }), response: { 200: TokenView, ...errors } } }, async (request) =>
      tokens.revoke(request.params.id));
  };
}
