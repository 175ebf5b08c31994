// A minimal mesh node for the LAN suites: a P2PHost and a Membership in one process,
// configured by the HM_MESH_NODE environment variable (JSON), reporting its view as one
// JSON line on stdout every 200 ms. SIGTERM stops it gracefully (departure announced).
import { generateKeyPair, privateKeyFromProtobuf } from '@libp2p/crypto/keys';
import { setLogLevel } from '../../daemon/log.ts';
import { Membership } from '../../daemon/membership/membership.ts';
import { sampleBody } from '../../daemon/membership/test-fixtures.ts';
import { createP2PHost } from '../../daemon/p2p/host.ts';

interface MeshNodeConfig {
  name: string;
  clusterKeyHex: string;
  privateKeyHex?: string;
  port?: number;
  mdns: boolean;
  bootstrap?: string[];
}

setLogLevel((process.env.HIVEMESH_LOG as 'debug' | undefined) ?? 'error');
const config = JSON.parse(process.env.HM_MESH_NODE ?? 'null') as MeshNodeConfig | null;
if (config === null) {
  process.stderr.write('mesh-node: set HM_MESH_NODE to a JSON config {name, clusterKeyHex, mdns, ...}\n');
  process.exit(2);
}

const privateKey = config.privateKeyHex === undefined ? await generateKeyPair('Ed25519') : privateKeyFromProtobuf(Buffer.from(config.privateKeyHex, 'hex'));
const host = await createP2PHost({
  privateKey,
  clusterKey: Buffer.from(config.clusterKeyHex, 'hex'),
  port: config.port ?? 7421,
  mdns: config.mdns,
  bootstrap: config.bootstrap ?? [],
});
const membership = new Membership({ host, self: () => sampleBody(config.name) });
await membership.start();

const report = (): void => {
  process.stdout.write(JSON.stringify({
    name: config.name,
    peerId: host.peerId,
    addresses: host.multiaddrs(),
    connected: host.connectedPeers(),
    members: membership.members().map((member) => ({ nodeId: member.nodeId, state: member.state, name: member.heartbeat?.name ?? null })),
    rssBytes: process.memoryUsage().rss,
    conflicts: membership.conflicts().map((conflict) => ({ source: conflict.source, nodeId: conflict.nodeId })),
  }) + '\n');
};
report();
const timer = setInterval(report, 200);

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
  await membership.stop();
  await host.stop();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
