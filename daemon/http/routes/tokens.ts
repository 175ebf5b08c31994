// Token management (admin only): POST /api/tokens, GET /api/tokens, DELETE /api/tokens/:id.
import { Type } from '@sinclair/typebox';
import { ErrorBody } from '../../../protocol/api.ts';
import { TokenCreate, TokenId, TokenView } from '../../../protocol/tokens.ts';
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

    app.delete('/api/tokens/:id', { config: { action: 'manageTokens' }, schema: { params: Type.Object({ id: TokenId }), response: { 200: TokenView, ...errors } } }, async (request) =>
      tokens.revoke(request.params.id));
  };
}
