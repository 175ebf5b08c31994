import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirsRemovedAfterEach } from '../tests/support/temp-dirs.ts';
import { ensureDataDir, generateToken, hashToken, loadOrCreateAdminToken, loadOrCreateClusterKey, SecretError, TokenHashCache } from './secrets.ts';

const dir = tempDirsRemovedAfterEach('secrets');

describe('TokenHashCache', () => {
  it('answers the same hash as hashToken and knows the admin token', () => {
    const admin = generateToken();
    const other = generateToken();
    const cache = new TokenHashCache(hashToken(admin));
    expect(cache.lookup(admin)).toEqual({ hash: hashToken(admin), admin: true });
    expect(cache.lookup(other)).toEqual({ hash: hashToken(other), admin: false });
    // Asked again, from the cache: the same answers.
    expect(cache.lookup(admin)).toEqual({ hash: hashToken(admin), admin: true });
    expect(cache.lookup(other)).toEqual({ hash: hashToken(other), admin: false });
  });

  it('stays bounded and still answers right after starting over', () => {
    const admin = generateToken();
    const cache = new TokenHashCache(hashToken(admin), 4);
    const tokens = Array.from({ length: 10 }, () => generateToken());
    for (const token of tokens) expect(cache.lookup(token)).toEqual({ hash: hashToken(token), admin: false });
    expect((cache as unknown as { entries: Map<string, unknown> }).entries.size).toBeLessThanOrEqual(4);
    expect(cache.lookup(admin).admin).toBe(true);
    expect(cache.lookup(tokens[0]!).hash).toBe(hashToken(tokens[0]!));
  });
});

describe('first start secrets', () => {
  it('creates the admin token and cluster key with mode 0600 and reads them back', () => {
    const dataDir = dir();
    const token = loadOrCreateAdminToken(dataDir);
    const key = loadOrCreateClusterKey(dataDir, null);
    expect(token.created).toBe(true);
    expect(key.created).toBe(true);
    expect(statSync(token.path).mode & 0o777).toBe(0o600);
    expect(statSync(key.path).mode & 0o777).toBe(0o600);
    expect(loadOrCreateAdminToken(dataDir)).toEqual({ token: token.token, path: token.path, created: false });
    expect(loadOrCreateClusterKey(dataDir, null).fingerprint).toBe(key.fingerprint);
    expect(readFileSync(token.path, 'utf8').trim()).toBe(token.token);
  });

  it('refuses a data dir that is a file, saying so', () => {
    const file = join(dir(), 'afile');
    writeFileSync(file, 'x');
    expect(() => ensureDataDir(file)).toThrow(/data dir .*afile is a file, not a directory/);
  });

  it('says what is wrong with a damaged admin token or cluster key file', () => {
    const dataDir = dir();
    writeFileSync(join(dataDir, 'admin.token'), 'not a token\n');
    expect(() => loadOrCreateAdminToken(dataDir)).toThrow(SecretError);
    expect(() => loadOrCreateAdminToken(dataDir)).toThrow(/does not hold a hivemesh token.*Delete it/);
    const keyFile = join(dataDir, 'copied.key');
    writeFileSync(keyFile, '/key/swarm/psk/1.0.0/\n/base16/\nabc\n');
    expect(() => loadOrCreateClusterKey(dataDir, keyFile)).toThrow(/not a hivemesh cluster key.*Copy cluster.key/);
    expect(() => loadOrCreateClusterKey(dataDir, join(dataDir, 'missing.key'))).toThrow(/cannot read the cluster key .*ENOENT/);
  });
});
