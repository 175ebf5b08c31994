// The node's libp2p identity: an Ed25519 key kept in <data-dir>/peer.key, so a restart
// keeps the peer id that the rest of the mesh (and Raft's membership) knows it by.
import { mkdir, open, readFile, rename, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { HivemeshError } from '../../protocol/errors.ts';
import { logger } from '../log.ts';

const log = logger('p2p');

export const PEER_KEY_FILE = 'peer.key';

/** A protobuf-marshalled Ed25519 private key is 68 bytes; anything far larger is not one. */
const peerKeyFileBytesMax = 4096;

/**
 * Reads `<dataDir>/peer.key`, or creates it (mode 0600) on first start. A corrupt file
 * is an error that names the file: guessing would silently change the node's identity.
 */
export async function loadOrCreatePeerKey(dataDir: string): Promise<PrivateKey> {
  const path = join(dataDir, PEER_KEY_FILE);
  let bytes: Uint8Array | null = null;
  try {
    bytes = await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new HivemeshError('internal', `cannot read the node identity ${path}: ${(error as Error).message}. Check the file's permissions.`, { cause: error });
    }
  }
  if (bytes !== null) return decodePeerKey(bytes, path);

  const key = await generateKeyPair('Ed25519');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // Write to a temporary file and rename, so a crash never leaves a half-written key.
  const temporaryPath = `${path}.tmp-${process.pid}`;
  const handle = await open(temporaryPath, 'w', 0o600);
  try {
    await handle.writeFile(privateKeyToProtobuf(key));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await chmod(temporaryPath, 0o600);
  await rename(temporaryPath, path);
  log.info('created a new node identity', { file: path });
  return key;
}

function decodePeerKey(bytes: Uint8Array, path: string): PrivateKey {
  const advice = `Restore it from a backup, or delete it to give this node a new identity (the mesh will then see it as a new node).`;
  if (bytes.byteLength === 0 || bytes.byteLength > peerKeyFileBytesMax) {
    throw new HivemeshError('internal', `the node identity ${path} is corrupt (${bytes.byteLength} bytes). ${advice}`);
  }
  let key: PrivateKey;
  try {
    key = privateKeyFromProtobuf(bytes);
  } catch (error) {
    throw new HivemeshError('internal', `the node identity ${path} is corrupt: ${(error as Error).message}. ${advice}`, { cause: error });
  }
  if (key.type !== 'Ed25519') {
    throw new HivemeshError('internal', `the node identity ${path} holds a ${key.type} key; hivemesh uses Ed25519. ${advice}`);
  }
  return key;
}
