// Management links for namespace LANs (tests/lan/netns.ts): one point-to-point veth from
// the test's own namespace into each LAN host, so the test reaches every daemon's HTTP API
// even while that host is cut off the LAN bridge (a partition cuts the LAN, not the
// observer). The daemons' libp2p stays on the LAN address; no routing joins the two, so
// mesh traffic cannot sneak around a partition through these links.
import { ip, type Lan, type LanHost } from '../lan/netns.ts';

/** /30 pairs in one /24: hosts 0..62. */
export const managedHostsMax = 63;

export interface ManagedHost {
  host: LanHost;
  /** Address of the host's end of the management link: where its API listens. */
  apiAddress: string;
}

/**
 * Adds a management link to every host of the LAN: 10.78.<subnet>.(4i+1) on this side,
 * 10.78.<subnet>.(4i+2) inside host i. `subnet` must be unique among LANs alive at once on
 * this machine (the near ends live in the shared namespace). Removed with the namespaces.
 */
export async function addManagementLinks(lan: Lan, subnet: number): Promise<ManagedHost[]> {
  if (!(Number.isInteger(subnet) && subnet >= 0 && subnet <= 255)) throw new RangeError(`subnet must be 0..255, got ${subnet}`);
  if (lan.hosts.length > managedHostsMax) throw new RangeError(`at most ${managedHostsMax} hosts get management links, the LAN has ${lan.hosts.length}`);
  const managed: ManagedHost[] = [];
  for (const host of lan.hosts) {
    const near = managementLinkName(lan.tag, host.index);
    // A link left by a crashed run would make `add` fail; it is ours by name.
    await ip(['link', 'del', near]).catch(() => undefined);
    await ip(['link', 'add', near, 'type', 'veth', 'peer', 'name', 'mgmt0', 'netns', host.namespace]);
    const base = 4 * host.index;
    await ip(['addr', 'add', `10.78.${subnet}.${base + 1}/30`, 'dev', near]);
    await ip(['link', 'set', near, 'up']);
    await ip(['-n', host.namespace, 'addr', 'add', `10.78.${subnet}.${base + 2}/30`, 'dev', 'mgmt0']);
    await ip(['-n', host.namespace, 'link', 'set', 'mgmt0', 'up']);
    managed.push({ host, apiAddress: `10.78.${subnet}.${base + 2}` });
  }
  return managed;
}

/** Deletes this LAN's management links (also gone when the namespaces are deleted). */
export async function removeManagementLinks(lan: Lan): Promise<void> {
  for (const host of lan.hosts) await ip(['link', 'del', managementLinkName(lan.tag, host.index)]).catch(() => undefined);
}

function managementLinkName(tag: string, index: number): string {
  // Interface names are at most 15 characters: "hm" + tag (<= 6) + "m" + index (<= 2).
  return `hm${tag}m${index}`;
}
