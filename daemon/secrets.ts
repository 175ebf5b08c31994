// The cluster key (libp2p private-network key: a host without it cannot finish a
// handshake) and this node's admin token. First start creates both in the data dir with
// mode 0600; other nodes join with a copy of the cluster key (--secret-file).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export class SecretError extends Error {
  override name = 'SecretError';
}

const keyHeader = '/key/swarm/psk/1.0.0/';

export interface ClusterSecret {
  /** The key file's bytes, as @libp2p/pnet expects them. */
  key: Uint8Array;
  path: string;
  created: boolean;
  /** A short, non-secret fingerprint of the key, safe to show and log. */
  fingerprint: string;
}

export function ensureDataDir(dataDir: string): void {
  if (existsSync(dataDir) && !statSync(dataDir).isDirectory()) {
    throw new SecretError(`data dir ${dataDir} is a file, not a directory. Choose another with --data-dir.`);
  }
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new SecretError(`cannot create data dir ${dataDir}: ${(error as NodeJS.ErrnoException).code}. Choose another with --data-dir.`);
  }
  if (!statSync(dataDir).isDirectory()) throw new SecretError(`data dir ${dataDir} is not a directory`);
}

function writePrivate(path: string, content: string): void {
  writeFileSync(path, content, { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600);
}

/** Parses a pnet key file and says precisely what is wrong with a bad one. */
export function parseClusterKey(text: string, path: string): Uint8Array {
  const lines = text.trim().split(/\r?\n/);
  if (lines.length !== 3 || lines[0] !== keyHeader || lines[1] !== '/base16/' || !/^[0-9a-fA-F]{64}$/.test(lines[2] ?? '')) {
    throw new SecretError(
      `${path} is not a hivemesh cluster key (expected 3 lines: "${keyHeader}", "/base16/", and 64 hex digits). ` +
      'Copy cluster.key from the first node of your cluster unchanged.');
  }
  return new TextEncoder().encode(`${lines.join('\n')}\n`);
}

function fingerprintOf(key: Uint8Array): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

export function loadOrCreateClusterKey(dataDir: string, secretFile: string | null): ClusterSecret {
  if (secretFile !== null) {
    let text: string;
    try {
      text = readFileSync(secretFile, 'utf8');
    } catch (error) {
      throw new SecretError(`cannot read the cluster key ${secretFile} (--secret-file): ${(error as NodeJS.ErrnoException).code}. Copy cluster.key from a node of the cluster there.`);
    }
    const key = parseClusterKey(text, secretFile);
    return { key, path: secretFile, created: false, fingerprint: fingerprintOf(key) };
  }
  const path = join(dataDir, 'cluster.key');
  if (existsSync(path)) {
    const key = parseClusterKey(readFileSync(path, 'utf8'), path);
    return { key, path, created: false, fingerprint: fingerprintOf(key) };
  }
  const text = `${keyHeader}\n/base16/\n${randomBytes(32).toString('hex')}\n`;
  writePrivate(path, text);
  const key = parseClusterKey(text, path);
  return { key, path, created: true, fingerprint: fingerprintOf(key) };
}

export interface AdminToken {
  token: string;
  path: string;
  created: boolean;
}

const tokenPattern = /^hm_[A-Za-z0-9_-]{20,200}$/;

export function generateToken(): string {
  return `hm_${randomBytes(24).toString('base64url')}`;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Token hashes of recent requests, so a client's every request does not hash its token
 * again (sha256 and the constant-time admin comparison were ~1.5 % of a loaded daemon's
 * CPU). Holds at most `max` tokens, then starts over; it answers what a token hashes to
 * and whether it is this node's admin token, never whether it is valid: revocation is
 * read from the replicated state on every request.
 */
export class TokenHashCache {
  private readonly entries = new Map<string, { hash: string; admin: boolean }>();
  private readonly adminTokenHash: string;
  private readonly max: number;

  constructor(adminTokenHash: string, max = 256) {
    this.adminTokenHash = adminTokenHash;
    this.max = max;
  }

  lookup(token: string): { hash: string; admin: boolean } {
    let entry = this.entries.get(token);
    if (entry === undefined) {
      const hash = hashToken(token);
      entry = { hash, admin: hashesEqual(hash, this.adminTokenHash) };
      if (this.entries.size >= this.max) this.entries.clear();
      this.entries.set(token, entry);
    }
    return entry;
  }
}

/** Compares two hex hashes in constant time. */
export function hashesEqual(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex');
  const right = Buffer.from(b, 'hex');
  return left.length === right.length && left.length > 0 && timingSafeEqual(left, right);
}

export function loadOrCreateAdminToken(dataDir: string): AdminToken {
  const path = join(dataDir, 'admin.token');
  if (existsSync(path)) {
    const token = readFileSync(path, 'utf8').trim();
    if (!tokenPattern.test(token)) {
      throw new SecretError(`${path} does not hold a hivemesh token (hm_...). Delete it and restart to create a new admin token.`);
    }
    return { token, path, created: false };
  }
  const token = generateToken();
  writePrivate(path, `${token}\n`);
  return { token, path, created: true };
}

export function isWellFormedToken(token: string): boolean {
  return tokenPattern.test(token);
}
