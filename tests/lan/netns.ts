// Network-namespace LANs for the LAN suites: each host is a namespace with one eth0 on
// a private bridge (itself in a namespace), so multicast (mDNS), partitions and byte
// counters are real and nothing leaves the machine. Needs root and `ip` (iproute2);
// `netnsUnavailableReason()` says why a suite must skip.
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Bound on each `ip` invocation, so a wedged command cannot hang a suite. */
const ipCommandTimeoutMs = 10_000;
/** Most hosts one LAN may have (addresses .1 to .200 of a /24). */
export const lanHostsMax = 200;

/** Runs `ip` with a bound, turning failures into errors that show the command and its stderr. */
export async function ip(args: string[]): Promise<string> {
  try {
    const { stdout } = await run('ip', args, { timeout: ipCommandTimeoutMs });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`ip ${args.join(' ')} failed: ${stderr || (error as Error).message}`, { cause: error });
  }
}

/** null when namespaces can be created here; otherwise why not, for a skip message. */
export async function netnsUnavailableReason(): Promise<string | null> {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespaces need root (run the LAN suites as root, e.g. in the CI container)';
  const probe = `hm-probe-${process.pid}`;
  try {
    await ip(['netns', 'add', probe]);
  } catch (error) {
    return `cannot create a network namespace: ${(error as Error).message}`;
  }
  await ip(['netns', 'del', probe]).catch(() => undefined);
  return null;
}

export interface LanHost {
  index: number;
  namespace: string;
  /** IPv4 address of the host's eth0. */
  address: string;
  /** Runs a command inside the namespace and returns its stdout. */
  exec(command: string, args: string[], timeoutMs?: number): Promise<string>;
  /** Starts a long-running process inside the namespace. */
  spawn(command: string, args: string[], options?: SpawnOptions): ChildProcess;
  /** Bytes sent and received on eth0 (kernel counters, all traffic). */
  counters(): Promise<{ txBytes: number; rxBytes: number }>;
}

export interface Lan {
  tag: string;
  hosts: LanHost[];
  /** Cuts a host off the bridge (its link stays up inside the host: a pulled cable elsewhere). */
  disconnect(host: LanHost): Promise<void>;
  reconnect(host: LanHost): Promise<void>;
  /** Deletes every namespace of this LAN (and with them the links and the bridge). */
  destroy(): Promise<void>;
}

export interface LanOptions {
  /** Short name, unique among LANs alive at once; letters and digits, at most 6. */
  tag: string;
  hostCount: number;
  /** Third octet of 10.77.X.0/24. LANs are isolated, so reuse is harmless. */
  subnet?: number;
}

/** Builds a LAN of `hostCount` namespaces on a bridge. Call destroy() in afterAll. */
export async function createLan(options: LanOptions): Promise<Lan> {
  const { tag, hostCount } = options;
  if (!/^[a-z0-9]{1,6}$/.test(tag)) throw new RangeError(`LAN tag "${tag}" must be 1 to 6 lowercase letters or digits`);
  if (!(hostCount >= 1 && hostCount <= lanHostsMax)) throw new RangeError(`hostCount must be 1..${lanHostsMax}, got ${hostCount}`);
  const subnet = options.subnet ?? 1;
  const switchNamespace = `hm-${tag}-sw`;
  const namespaces = [switchNamespace];
  const hostNamespace = (index: number): string => `hm-${tag}-${index}`;
  await removeNamespaces(tag);
  try {
    await ip(['netns', 'add', switchNamespace]);
    await ip(['-n', switchNamespace, 'link', 'set', 'lo', 'up']);
    await ip(['-n', switchNamespace, 'link', 'add', 'br0', 'type', 'bridge']);
    // No IGMP querier on this bridge: without snooping off, multicast could be filtered.
    await ip(['-n', switchNamespace, 'link', 'set', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
    await ip(['-n', switchNamespace, 'link', 'set', 'br0', 'up']);
    const hosts: LanHost[] = [];
    for (let index = 0; index < hostCount; index++) {
      const namespace = hostNamespace(index);
      namespaces.push(namespace);
      const address = `10.77.${subnet}.${index + 1}`;
      await ip(['netns', 'add', namespace]);
      await ip(['-n', namespace, 'link', 'set', 'lo', 'up']);
      await ip(['-n', switchNamespace, 'link', 'add', `v${index}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', namespace]);
      await ip(['-n', switchNamespace, 'link', 'set', `v${index}`, 'master', 'br0']);
      await ip(['-n', switchNamespace, 'link', 'set', `v${index}`, 'up']);
      await ip(['-n', namespace, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      await ip(['-n', namespace, 'link', 'set', 'eth0', 'up']);
      // mDNS sends to 224.0.0.251: give multicast a route out of eth0.
      await ip(['-n', namespace, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
      hosts.push(lanHost(index, namespace, address));
    }
    return {
      tag,
      hosts,
      disconnect: async (host) => { await ip(['-n', switchNamespace, 'link', 'set', `v${host.index}`, 'down']); },
      reconnect: async (host) => { await ip(['-n', switchNamespace, 'link', 'set', `v${host.index}`, 'up']); },
      destroy: () => removeNamespaces(tag),
    };
  } catch (error) {
    await removeNamespaces(tag);
    throw error;
  }
}

function lanHost(index: number, namespace: string, address: string): LanHost {
  return {
    index,
    namespace,
    address,
    exec: async (command, args, timeoutMs = ipCommandTimeoutMs) => {
      const { stdout } = await run('ip', ['netns', 'exec', namespace, command, ...args], { timeout: timeoutMs });
      return stdout;
    },
    spawn: (command, args, options = {}) => spawn('ip', ['netns', 'exec', namespace, command, ...args], options),
    counters: async () => {
      // `ip -s -j link` reads the namespace's own counters without remounting /sys.
      const [link] = JSON.parse(await ip(['-n', namespace, '-s', '-j', 'link', 'show', 'eth0'])) as Array<{ stats64: { tx: { bytes: number }; rx: { bytes: number } } }>;
      return { txBytes: link!.stats64.tx.bytes, rxBytes: link!.stats64.rx.bytes };
    },
  };
}

/** Deletes the namespaces of a LAN tag, including ones left by a crashed run. */
export async function removeNamespaces(tag: string): Promise<void> {
  const listing = await ip(['netns', 'list']).catch(() => '');
  const prefix = `hm-${tag}-`;
  const names = listing.split('\n').map((line) => line.split(' ')[0]!).filter((name) => name.startsWith(prefix));
  for (const name of names) await ip(['netns', 'del', name]).catch(() => undefined);
}
