// Helpers for the in-process p2p and membership tests: cluster keys, hosts on loopback
// and a bounded wait, so no test can hang.
import { generateKeyPair } from '@libp2p/crypto/keys';
import { generateKey } from '@libp2p/pnet';
import { createP2PHost, type P2PHost, type P2PHostOptions } from './host.ts';

export function newClusterKey(): Uint8Array {
  const key = new Uint8Array(95);
  generateKey(key);
  return key;
}

export async function startLoopbackHost(clusterKey: Uint8Array, options: Partial<P2PHostOptions> = {}): Promise<P2PHost> {
  return createP2PHost({
    privateKey: options.privateKey ?? await generateKeyPair('Ed25519'),
    clusterKey,
    listenHost: '127.0.0.1',
    port: 0,
    mdns: false,
    ...options,
  });
}

/** The loopback address of a host, with its /p2p/ id. */
export function loopbackAddress(host: P2PHost): string {
  const address = host.multiaddrs().find((candidate) => candidate.startsWith('/ip4/127.0.0.1/'));
  if (address === undefined) throw new Error(`host ${host.peerId} has no loopback address: ${host.multiaddrs().join(', ')}`);
  return address;
}

/** Polls until the condition holds; throws with the description after timeoutMs. */
export async function waitFor(description: string, condition: () => boolean, timeoutMs = 5_000, intervalMs = 20): Promise<number> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${description}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  return performance.now() - started;
}
