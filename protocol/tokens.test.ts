// Tests of the role table: what each role may do.
import { describe, expect, it } from 'vitest';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { TokenRecord, actions, can, roles } from './tokens.ts';

describe('can', () => {
  it('gives admin everything, operator task work and reads, viewer reads only', () => {
    const table = Object.fromEntries(roles.map((role) => [role, actions.filter((action) => can(role, action))]));
    expect(table).toEqual({
      admin: ['read', 'submit', 'cancel', 'assign', 'manageTokens', 'administer'],
      operator: ['read', 'submit', 'cancel', 'assign'],
      viewer: ['read'],
    });
  });

  it('checks token records: hash is lower-case sha256 hex', () => {
    const check = TypeCompiler.Compile(TokenRecord);
    const token = { id: 'tok1', name: 'ci', role: 'operator', hash: 'a'.repeat(64), createdAt: 1, revokedAt: null };
    expect(check.Check(token)).toBe(true);
    expect(check.Check({ ...token, hash: 'A'.repeat(64) })).toBe(false);
    expect(check.Check({ ...token, role: 'root' })).toBe(false);
  });
});
