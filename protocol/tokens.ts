// Bearer tokens: roles, what each role may do, and the record the replicated state keeps.
// Only the sha256 hash of a token is replicated, so a copy of any node's data does not
// hand out working tokens.
import { Type, type Static } from '@sinclair/typebox';
import * as limits from './limits.ts';

export const Role = Type.Union([Type.Literal('admin'), Type.Literal('operator'), Type.Literal('viewer')]);
export type Role = Static<typeof Role>;
export const roles: readonly Role[] = ['admin', 'operator', 'viewer'];

/**
 * What a request does, as the HTTP and MCP edges check it. `read` covers every GET
 * (status, nodes, tasks, events, metrics); `manageTokens` and `administer` (membership,
 * cluster settings) are admin only.
 */
export const Action = Type.Union([
  Type.Literal('read'), Type.Literal('submit'), Type.Literal('cancel'), Type.Literal('assign'),
  Type.Literal('manageTokens'), Type.Literal('administer'),
]);
export type Action = Static<typeof Action>;
export const actions: readonly Action[] = ['read', 'submit', 'cancel', 'assign', 'manageTokens', 'administer'];

/** What each action is, in words, for refusals people read. */
export const actionWords: Record<Action, string> = {
  read: 'read', submit: 'submit tasks or run generations', cancel: 'cancel tasks', assign: 'pin tasks to nodes', manageTokens: 'manage tokens', administer: 'administer the cluster',
};

// The table itself, so the README and the tests can print and check it as data.
export const permissions: Readonly<Record<Role, readonly Action[]>> = {
  admin: actions,
  operator: ['read', 'submit', 'cancel', 'assign'],
  viewer: ['read'],
};

export function can(role: Role, action: Action): boolean {
  return permissions[role].includes(action);
}

export const TokenId = Type.String({ minLength: 1, maxLength: limits.tokenIdLengthMax, pattern: '^[A-Za-z0-9_-]+$' });
/** Lower-case hex sha256 of the whole token string as the client sends it. */
export const TokenHash = Type.String({ pattern: '^[0-9a-f]{64}$' });

export const TokenRecord = Type.Object({
  id: TokenId,
  name: Type.String({ minLength: 1, maxLength: limits.tokenNameLengthMax }),
  role: Role,
  hash: TokenHash,
  /** ms since the epoch, as the proposing leader saw it. */
  createdAt: Type.Integer({ minimum: 0 }),
  revokedAt: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
}, { additionalProperties: false });
export type TokenRecord = Static<typeof TokenRecord>;

/** What the API shows about a token: never the hash. */
export const TokenView = Type.Omit(TokenRecord, ['hash']);
export type TokenView = Static<typeof TokenView>;

/**
 * GET /api/tokens/self: the calling token's own id, name and role, and the actions that
 * role may do, so a client (the dashboard) offers only what the server would allow.
 * Any valid token may ask; the list comes from `permissions`, the one table of roles.
 */
export const TokenSelf = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: Role,
  actions: Type.Array(Action),
}, { additionalProperties: false });
export type TokenSelf = Static<typeof TokenSelf>;

/** POST body to create a token (`hivemesh token create --role ROLE --name NAME`). */
export const TokenCreate = Type.Object({
  role: Role,
  name: Type.String({ minLength: 1, maxLength: limits.tokenNameLengthMax }),
}, { additionalProperties: false });
export type TokenCreate = Static<typeof TokenCreate>;
