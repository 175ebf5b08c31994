// `hivemesh start`: resolve the settings, start the daemon, say where everything is, and
// stop gracefully on SIGINT/SIGTERM (a second signal stops at once).
import { ConfigError, loadConfig } from '../../config.ts';
import { logger } from '../../log.ts';
import { CliError } from '../client.ts';

const log = logger('hivemesh');

const help = `hivemesh start: run the daemon on this machine

Every setting comes from a flag, else a HIVEMESH_* environment variable, else the JSON
config file (--config, or <data-dir>/config.json), else its default.

  --config F                  JSON config file: keys are the flags in camelCase ("apiPort": 7420,
                              "voters": 3, "mdns": false for --no-mdns), plus "agents"
  --data-dir D                data, keys, tokens (default ~/.hivemesh)      HIVEMESH_DATA_DIR
  --name N                    node name (default: host name)                 HIVEMESH_NAME
  --api-host H                HTTP listen address (default 0.0.0.0)          HIVEMESH_API_HOST
  --api-port P                HTTP port: API, dashboard, gateway, MCP (7420) HIVEMESH_API_PORT
  --api-url U                 URL others use to reach this API (default: LAN address) HIVEMESH_API_URL
  --p2p-host H                libp2p listen address (default 0.0.0.0)        HIVEMESH_P2P_HOST
  --p2p-port P                libp2p TCP port (default 7421)                 HIVEMESH_P2P_PORT
  --ollama-url U              this host's Ollama (default http://127.0.0.1:11434) HIVEMESH_OLLAMA_URL
  --secret-file F             cluster key to join with (default: <data-dir>/cluster.key, created) HIVEMESH_SECRET_FILE
  --bootstrap MULTIADDR       a static peer, repeatable (comma list in env)  HIVEMESH_BOOTSTRAP
  --no-mdns                   no multicast discovery (use --bootstrap)       HIVEMESH_MDNS=false
  --calibrate                 when idle, measure each model in VRAM with a short generation,
                              so the first tasks are placed by speed (off)   HIVEMESH_CALIBRATE=true
  --no-preload                ignore the leader's requests to load a model into VRAM ahead of
                              its tasks (see Known limits)                   HIVEMESH_PRELOAD=false
  --allow-origin O            a web origin whose pages may call the Ollama/OpenAI routes from a
                              browser, repeatable; localhost pages, app webviews and browser
                              extensions may already, as with Ollama     HIVEMESH_ALLOWED_ORIGINS
  --heartbeat-interval-ms N   gossip period (1000)                           HIVEMESH_HEARTBEAT_INTERVAL_MS
  --suspect-after-ms N        silent this long: suspect (2500)               HIVEMESH_SUSPECT_AFTER_MS
  --dead-after-ms N           silent this long: dead (4500)                  HIVEMESH_DEAD_AFTER_MS
  --concurrency N             generations run at once on this node (2)       HIVEMESH_CONCURRENCY
  --voters N                  voters the cluster aims for (3; 5 with >= 5 nodes) HIVEMESH_VOTERS
  --voter-replace-after-ms N  a voter dead this long is replaced (30000)     HIVEMESH_VOTER_REPLACE_AFTER_MS
  --tick-ms N                 consensus tick (50)                            HIVEMESH_TICK_MS
  --keep-finished-tasks N     finished tasks kept (10000; 0..20000)          HIVEMESH_KEEP_FINISHED_TASKS
  --keep-finished-tasks-ms N  and for how long (7 days; at least 60000)      HIVEMESH_KEEP_FINISHED_TASKS_MS
  --snapshot-every-entries N  log entries between state snapshots (100000)   HIVEMESH_SNAPSHOT_EVERY_ENTRIES`;

export async function startCommand(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  let config;
  try {
    config = loadConfig(argv);
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError(`hivemesh start: ${error.message}`, 2);
    throw error;
  }
  const { Daemon } = await import('../../daemon.ts');
  let daemon;
  try {
    daemon = await Daemon.start(config);
  } catch (error) {
    const name = (error as Error).name;
    if (['SecretError', 'StorageError', 'ConfigError', 'PeerKeyError'].includes(name)) throw new CliError(`hivemesh start: ${(error as Error).message}`, 1);
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new CliError(`hivemesh start: a port is already in use (${(error as Error).message}). Is another hivemesh running? Pick other ports with --api-port / --p2p-port.`, 1);
    }
    // libp2p wraps the listen failure of the p2p port in its own error.
    if (name === 'UnsupportedListenAddressesError' || /failed to be listened on/.test((error as Error).message)) {
      throw new CliError(`hivemesh start: cannot listen on the p2p port ${config.p2pPort} (${config.p2pHost}): it is in use or not an address of this machine. Is another hivemesh running? Pick another with --p2p-port (or --p2p-host).`, 1);
    }
    throw error;
  }
  const lines = [
    `hivemesh node "${config.name}" is running (id ${daemon.nodeId})`,
    `  dashboard and API  ${config.apiUrl}/`,
    `  libp2p             ${daemon.host.multiaddrs().join('\n                     ') || '(no listen address)'}`,
    `  data dir           ${config.dataDir}`,
    daemon.clusterSecret.created
      ? `  cluster key        created ${daemon.clusterSecret.path}: copy it to every other machine and start them with --secret-file <path>`
      : `  cluster key        ${daemon.clusterSecret.path} (fingerprint ${daemon.clusterSecret.fingerprint})`,
    daemon.adminToken.created
      ? `  admin token        created ${daemon.adminToken.path} (mode 0600); the CLI on this machine uses it`
      : `  admin token        ${daemon.adminToken.path}`,
    `  ollama             ${config.ollamaUrl}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);

  return new Promise<number>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signals += 1;
      if (signals > 1) {
        log.warn('second signal: stopping at once');
        process.exit(130);
      }
      log.info(`${signal}: leaving the mesh`);
      daemon.stop().then(() => resolve(0), (error: unknown) => {
        log.error('stop failed', { error: error as Error });
        resolve(1);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
