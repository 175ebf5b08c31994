// The persistent node identity: created once with mode 0600, the same id after a
// restart, and a corrupt file refused with a message that names it.
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { describe, expect, it } from 'vitest';
import { tempDirsRemovedAfterEach } from '../../tests/support/temp-dirs.ts';
import { setLogLevel } from '../log.ts';
import { loadOrCreatePeerKey, PEER_KEY_FILE } from './identity.ts';

setLogLevel('error');

const freshDir = tempDirsRemovedAfterEach('identity');

describe('loadOrCreatePeerKey', () => {
  it('creates an Ed25519 key with mode 0600 and returns the same identity afterwards', async () => {
    const dataDir = join(freshDir(), 'nested', 'data');
    const first = await loadOrCreatePeerKey(dataDir);
    expect(first.type).toBe('Ed25519');
    expect(statSync(join(dataDir, PEER_KEY_FILE)).mode & 0o777).toBe(0o600);
    const second = await loadOrCreatePeerKey(dataDir);
    expect(peerIdFromPrivateKey(second).toString()).toBe(peerIdFromPrivateKey(first).toString());
  });

  it('refuses a corrupt key file, naming it and saying what deleting it does', async () => {
    const dataDir = freshDir();
    writeFileSync(join(dataDir, PEER_KEY_FILE), 'not a key');
    await expect(loadOrCreatePeerKey(dataDir)).rejects.toThrow(new RegExp(`${join(dataDir, PEER_KEY_FILE).replaceAll('/', '\\/')} is corrupt.*delete it to give this node a new identity`));
    writeFileSync(join(dataDir, PEER_KEY_FILE), '');
    await expect(loadOrCreatePeerKey(dataDir)).rejects.toThrow(/is corrupt \(0 bytes\)/);
  });
});
