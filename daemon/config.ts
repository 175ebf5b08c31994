// The daemon's settings. Every setting can come from a flag, a HIVEMESH_* environment
// variable or a JSON config file, in that order of precedence, else its default. Each
// resolved value remembers where it came from, so an error can say which one to fix.
import { readFileSync } from 'node:fs';
import { homedir, hostname, networkInterfaces } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as limits from '../protocol/limits.ts';
import { originPatternProblem } from './gateway/cors.ts';

export interface AgentConfig {
  id: string;
  model: string;
  capabilities: Array<string | { name: string; proficiency: number }>;
  system?: string;
}

export interface DaemonConfig {
  configFile: string | null;
  dataDir: string;
  name: string;
  apiHost: string;
  apiPort: number;
  /** URL other nodes and the dashboard use to reach this node's API. */
  apiUrl: string;
  p2pHost: string;
  p2pPort: number;
  ollamaUrl: string;
  secretFile: string | null;
  bootstrap: string[];
  mdns: boolean;
  /** Measure each model in VRAM with a short generation while idle (probe/calibration.ts). */
  calibrate: boolean;
  /** Load models into VRAM when the leader asks, ahead of their tasks (tasks/preload.ts). */
  preload: boolean;
  heartbeatIntervalMs: number;
  suspectAfterMs: number;
  deadAfterMs: number;
  /** Generations this node runs at once. */
  concurrency: number;
  /** Voters the cluster aims for; null: 3, or 5 when at least 5 nodes are alive. */
  votersTarget: number | null;
  /** A voter dead this long is replaced by a live learner. */
  voterReplaceAfterMs: number;
  /** Consensus timing: one tick is tickMs of local time. */
  tickMs: number;
  /** Finished tasks kept before pruning (count and age). */
  keepFinishedTasks: number;
  /** Applied log entries between two snapshots (compactions) of the replicated state. */
  snapshotEveryEntries: number;
  keepFinishedTasksMs: number;
  agents: AgentConfig[];
  /** Web origins allowed to call the Ollama/OpenAI gateway from a browser, beyond Ollama's defaults (gateway/cors.ts). */
  allowedOrigins: string[];
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Source = 'flag' | 'env' | 'file' | 'default';

interface Setting {
  key: keyof DaemonConfig;
  flag: string;
  env: string;
  kind: 'string' | 'port' | 'integer' | 'boolean' | 'list' | 'url' | 'agents' | 'origins';
  min?: number;
  max?: number;
  /** Why the bounds are what they are, added to the error when a value is out of them. */
  boundsReason?: string;
}

/**
 * The shortest time a finished task may be kept: the window in which a client that was not
 * watching at the end (a `--wait` that reconnects, an MCP wait_for_task called again, a
 * poll of GET /api/tasks/:id) can still read the result. Shorter, the next prune (once a
 * minute) may take it before they look. A minute is also how long an attempt's live
 * output stays readable for watchers.
 */
export const keepFinishedTasksMsMin = 60_000;
const allowedOriginsMax = 64;

const settings: Setting[] = [
  { key: 'dataDir', flag: 'data-dir', env: 'HIVEMESH_DATA_DIR', kind: 'string' },
  { key: 'name', flag: 'name', env: 'HIVEMESH_NAME', kind: 'string' },
  { key: 'apiHost', flag: 'api-host', env: 'HIVEMESH_API_HOST', kind: 'string' },
  { key: 'apiPort', flag: 'api-port', env: 'HIVEMESH_API_PORT', kind: 'port' },
  { key: 'apiUrl', flag: 'api-url', env: 'HIVEMESH_API_URL', kind: 'url' },
  { key: 'p2pHost', flag: 'p2p-host', env: 'HIVEMESH_P2P_HOST', kind: 'string' },
  { key: 'p2pPort', flag: 'p2p-port', env: 'HIVEMESH_P2P_PORT', kind: 'port' },
  { key: 'ollamaUrl', flag: 'ollama-url', env: 'HIVEMESH_OLLAMA_URL', kind: 'url' },
  { key: 'secretFile', flag: 'secret-file', env: 'HIVEMESH_SECRET_FILE', kind: 'string' },
  { key: 'bootstrap', flag: 'bootstrap', env: 'HIVEMESH_BOOTSTRAP', kind: 'list' },
  { key: 'mdns', flag: 'mdns', env: 'HIVEMESH_MDNS', kind: 'boolean' },
  { key: 'calibrate', flag: 'calibrate', env: 'HIVEMESH_CALIBRATE', kind: 'boolean' },
  { key: 'preload', flag: 'preload', env: 'HIVEMESH_PRELOAD', kind: 'boolean' },
  { key: 'allowedOrigins', flag: 'allow-origin', env: 'HIVEMESH_ALLOWED_ORIGINS', kind: 'origins' },
  { key: 'heartbeatIntervalMs', flag: 'heartbeat-interval-ms', env: 'HIVEMESH_HEARTBEAT_INTERVAL_MS', kind: 'integer', min: 50, max: 60_000 },
  { key: 'suspectAfterMs', flag: 'suspect-after-ms', env: 'HIVEMESH_SUSPECT_AFTER_MS', kind: 'integer', min: 100, max: 600_000 },
  { key: 'deadAfterMs', flag: 'dead-after-ms', env: 'HIVEMESH_DEAD_AFTER_MS', kind: 'integer', min: 200, max: 3_600_000 },
  { key: 'concurrency', flag: 'concurrency', env: 'HIVEMESH_CONCURRENCY', kind: 'integer', min: 1, max: 1024 },
  { key: 'votersTarget', flag: 'voters', env: 'HIVEMESH_VOTERS', kind: 'integer', min: 1, max: 7 },
  { key: 'voterReplaceAfterMs', flag: 'voter-replace-after-ms', env: 'HIVEMESH_VOTER_REPLACE_AFTER_MS', kind: 'integer', min: 1_000, max: 86_400_000 },
  { key: 'tickMs', flag: 'tick-ms', env: 'HIVEMESH_TICK_MS', kind: 'integer', min: 5, max: 1_000 },
  {
    key: 'keepFinishedTasks', flag: 'keep-finished-tasks', env: 'HIVEMESH_KEEP_FINISHED_TASKS', kind: 'integer', min: 0, max: limits.finishedTasksMax,
    boundsReason: `the replicated state keeps at most ${limits.finishedTasksMax} finished tasks, whatever this asks`,
  },
  {
    key: 'keepFinishedTasksMs', flag: 'keep-finished-tasks-ms', env: 'HIVEMESH_KEEP_FINISHED_TASKS_MS', kind: 'integer', min: keepFinishedTasksMsMin, max: 365 * 86_400_000,
    boundsReason: `kept less than ${keepFinishedTasksMsMin / 1_000} s, a finished task could be pruned before a --wait client that reconnects or a poll of GET /api/tasks/ID reads its result`,
  },
  { key: 'snapshotEveryEntries', flag: 'snapshot-every-entries', env: 'HIVEMESH_SNAPSHOT_EVERY_ENTRIES', kind: 'integer', min: 100, max: 1_000_000 },
  { key: 'agents', flag: '', env: '', kind: 'agents' },
];

/** Flags `hivemesh start` accepts, for parseArgs and for the help text. */
export const startFlagOptions = {
  config: { type: 'string' },
  'data-dir': { type: 'string' },
  name: { type: 'string' },
  'api-host': { type: 'string' },
  'api-port': { type: 'string' },
  'api-url': { type: 'string' },
  'p2p-host': { type: 'string' },
  'p2p-port': { type: 'string' },
  'ollama-url': { type: 'string' },
  'secret-file': { type: 'string' },
  bootstrap: { type: 'string', multiple: true },
  'no-mdns': { type: 'boolean' },
  calibrate: { type: 'boolean' },
  'no-preload': { type: 'boolean' },
  'allow-origin': { type: 'string', multiple: true },
  'heartbeat-interval-ms': { type: 'string' },
  'suspect-after-ms': { type: 'string' },
  'dead-after-ms': { type: 'string' },
  concurrency: { type: 'string' },
  voters: { type: 'string' },
  'voter-replace-after-ms': { type: 'string' },
  'tick-ms': { type: 'string' },
  'keep-finished-tasks': { type: 'string' },
  'keep-finished-tasks-ms': { type: 'string' },
  'snapshot-every-entries': { type: 'string' },
} as const;

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.HOME ?? homedir(), '.hivemesh');
}

/** The first non-internal IPv4 address, so peers on the LAN can reach the API. */
export function lanAddress(): string {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.family === 'IPv4' && !address.internal) return address.address;
    }
  }
  return '127.0.0.1';
}

function defaults(env: NodeJS.ProcessEnv): Omit<DaemonConfig, 'configFile' | 'apiUrl'> {
  return {
    dataDir: defaultDataDir(env),
    name: hostname().slice(0, limits.nodeNameLengthMax) || 'hivemesh-node',
    apiHost: '0.0.0.0',
    apiPort: 7420,
    p2pHost: '0.0.0.0',
    p2pPort: 7421,
    ollamaUrl: 'http://127.0.0.1:11434',
    secretFile: null,
    bootstrap: [],
    mdns: true,
    calibrate: false,
    preload: true,
    heartbeatIntervalMs: limits.heartbeatIntervalMsDefault,
    suspectAfterMs: limits.suspectAfterMsDefault,
    deadAfterMs: limits.deadAfterMsDefault,
    concurrency: 2,
    votersTarget: null,
    voterReplaceAfterMs: 30_000,
    tickMs: 50,
    keepFinishedTasks: limits.finishedTasksKeepMaxDefault,
    keepFinishedTasksMs: 7 * 86_400_000,
    snapshotEveryEntries: limits.raftSnapshotEveryEntriesDefault,
    agents: [],
    allowedOrigins: [],
  };
}

function describe(setting: Setting, source: Source): string {
  switch (source) {
    case 'flag': return `--${setting.key === 'mdns' || setting.key === 'preload' ? `no-${setting.flag}` : setting.flag}`;
    case 'env': return setting.env;
    case 'file': return `"${setting.key}" in the config file`;
    default: return setting.key;
  }
}

function convert(setting: Setting, raw: unknown, source: Source): unknown {
  const where = describe(setting, source);
  switch (setting.kind) {
    case 'string': {
      if (typeof raw !== 'string' || raw.trim() === '') throw new ConfigError(`${where}: must be a non-empty string`);
      return raw.trim();
    }
    case 'port':
    case 'integer': {
      const value = typeof raw === 'number' ? raw : typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
      const min = setting.kind === 'port' ? 0 : setting.min ?? 0;
      const max = setting.kind === 'port' ? 65_535 : setting.max ?? Number.MAX_SAFE_INTEGER;
      if (!Number.isInteger(value) || value < min || value > max) {
        const reason = Number.isInteger(value) && setting.boundsReason !== undefined ? ` (${setting.boundsReason})` : '';
        throw new ConfigError(`${where}: must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}${reason}`);
      }
      return value;
    }
    case 'boolean': {
      if (typeof raw === 'boolean') return raw;
      if (typeof raw === 'string' && /^(1|true|yes|on)$/i.test(raw)) return true;
      if (typeof raw === 'string' && /^(0|false|no|off)$/i.test(raw)) return false;
      throw new ConfigError(`${where}: must be true or false, got ${JSON.stringify(raw)}`);
    }
    case 'url': {
      if (typeof raw !== 'string') throw new ConfigError(`${where}: must be a URL such as http://127.0.0.1:11434`);
      let url: URL;
      try {
        url = new URL(raw);
      } catch {
        throw new ConfigError(`${where}: ${JSON.stringify(raw)} is not a URL; use a form such as http://127.0.0.1:11434`);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`${where}: must be an http:// or https:// URL, got ${JSON.stringify(raw)}`);
      return raw.replace(/\/+$/, '');
    }
    case 'list': {
      const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : null;
      if (items === null || items.some((item) => typeof item !== 'string')) throw new ConfigError(`${where}: must be a list of multiaddrs`);
      const list = (items as string[]).map((item) => item.trim()).filter((item) => item !== '');
      if (list.length > limits.bootstrapPeersMax) throw new ConfigError(`${where}: at most ${limits.bootstrapPeersMax} bootstrap peers, got ${list.length}`);
      for (const address of list) {
        if (!address.startsWith('/') || !address.includes('/p2p/')) {
          throw new ConfigError(`${where}: ${JSON.stringify(address)} is not a multiaddr with a peer id; use the form /ip4/10.0.0.2/tcp/7421/p2p/12D3KooW... (see \`hivemesh status\` on that node)`);
        }
      }
      return list;
    }
    case 'origins': {
      const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : null;
      if (items === null || items.some((item) => typeof item !== 'string')) throw new ConfigError(`${where}: must be a list of origins such as https://app.example.com`);
      const list = (items as string[]).map((item) => item.trim()).filter((item) => item !== '');
      if (list.length > allowedOriginsMax) throw new ConfigError(`${where}: at most ${allowedOriginsMax} origins, got ${list.length}`);
      for (const origin of list) {
        const problem = originPatternProblem(origin);
        if (problem !== null) throw new ConfigError(`${where}: ${problem}`);
      }
      return list;
    }
    case 'agents':
      return validateAgents(raw, where);
  }
}

function validateAgents(raw: unknown, where: string): AgentConfig[] {
  if (!Array.isArray(raw)) throw new ConfigError(`${where}: must be a list of agents`);
  if (raw.length > limits.agentsPerNodeMax) throw new ConfigError(`${where}: at most ${limits.agentsPerNodeMax} agents`);
  const seen = new Set<string>();
  return raw.map((agent: unknown, position) => {
    const at = `${where}[${position}]`;
    if (typeof agent !== 'object' || agent === null) throw new ConfigError(`${at}: must be an object with id, model and capabilities`);
    const { id, model, capabilities, system } = agent as Record<string, unknown>;
    if (typeof id !== 'string' || id === '' || id.length > 128) throw new ConfigError(`${at}.id: must be a string of 1 to 128 characters`);
    if (seen.has(id)) throw new ConfigError(`${at}.id: "${id}" is used by two agents`);
    seen.add(id);
    if (typeof model !== 'string' || model === '' || model.length > limits.modelNameLengthMax) throw new ConfigError(`${at}.model: must be a model name such as llama3.2:3b`);
    if (!Array.isArray(capabilities) || capabilities.length > limits.capabilitiesPerAgentMax) {
      throw new ConfigError(`${at}.capabilities: must be a list of at most ${limits.capabilitiesPerAgentMax} names or {name, proficiency} objects`);
    }
    for (const capability of capabilities) {
      const ok = typeof capability === 'string'
        ? capability.length > 0 && capability.length <= limits.capabilityLengthMax
        : typeof capability === 'object' && capability !== null
          && typeof (capability as { name?: unknown }).name === 'string'
          && typeof (capability as { proficiency?: unknown }).proficiency === 'number'
          && (capability as { proficiency: number }).proficiency >= 0 && (capability as { proficiency: number }).proficiency <= 1;
      if (!ok) throw new ConfigError(`${at}.capabilities: ${JSON.stringify(capability)} must be a name or {"name": "...", "proficiency": 0..1}`);
    }
    if (system !== undefined && (typeof system !== 'string' || system.length > limits.systemPromptLengthMax)) {
      throw new ConfigError(`${at}.system: must be a string of at most ${limits.systemPromptLengthMax} characters`);
    }
    return { id, model, capabilities: capabilities as AgentConfig['capabilities'], ...(system === undefined ? {} : { system: system as string }) };
  });
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(`config file ${path} must hold a JSON object`);
  // The flag's own camelCase name, as the help says, where the setting is named otherwise.
  const record = parsed as Record<string, unknown>;
  if ('voters' in record) {
    if ('votersTarget' in record) throw new ConfigError(`config file ${path}: give "voters" or "votersTarget", not both`);
    record.votersTarget = record.voters;
    delete record.voters;
  }
  const known = new Set<string>(settings.map((setting) => setting.key));
  for (const key of Object.keys(parsed)) {
    if (!known.has(key)) throw new ConfigError(`config file ${path}: unknown setting "${key}"; known settings: ${[...known].join(', ')}`);
  }
  return parsed as Record<string, unknown>;
}

/** Resolves the configuration from `hivemesh start` arguments, the environment and the config file. */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): DaemonConfig {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: startFlagOptions, strict: true, allowPositionals: false });
  } catch (error) {
    throw new ConfigError(`${(error as Error).message}. Run \`hivemesh start --help\` for the flags.`);
  }
  const flags = parsed.values as Record<string, unknown>;
  const flagValue = (setting: Setting): unknown => {
    // Both are on by default: their flags turn them off.
    if (setting.key === 'mdns' || setting.key === 'preload') return flags[`no-${setting.flag}`] === true ? false : undefined;
    return setting.flag === '' ? undefined : flags[setting.flag];
  };
  const envValue = (setting: Setting): unknown => {
    if (setting.key === 'mdns' && env.HIVEMESH_NO_MDNS !== undefined && env.HIVEMESH_MDNS === undefined) {
      return /^(1|true|yes|on)$/i.test(env.HIVEMESH_NO_MDNS) ? 'false' : 'true';
    }
    return setting.env === '' ? undefined : env[setting.env];
  };

  const base = defaults(env);
  const dataDirSetting = settings[0]!;
  const earlyDataDir = (flagValue(dataDirSetting) ?? envValue(dataDirSetting)) as string | undefined;
  const explicitConfig = (flags.config as string | undefined) ?? env.HIVEMESH_CONFIG;
  let configFile: string | null = null;
  let file: Record<string, unknown> = {};
  if (explicitConfig !== undefined) {
    configFile = resolve(explicitConfig);
    file = readConfigFile(configFile);
  } else {
    const candidate = join(resolve(earlyDataDir ?? base.dataDir), 'config.json');
    try {
      readFileSync(candidate);
      configFile = candidate;
      file = readConfigFile(candidate);
    } catch (error) {
      if (error instanceof ConfigError) throw error;
    }
  }

  const result: Record<string, unknown> = { ...base, configFile, apiUrl: '' };
  for (const setting of settings) {
    const candidates: Array<[Source, unknown]> = [['flag', flagValue(setting)], ['env', envValue(setting)], ['file', file[setting.key]]];
    for (const [source, raw] of candidates) {
      if (raw === undefined) continue;
      result[setting.key] = convert(setting, raw, source);
      break;
    }
  }
  const config = result as unknown as DaemonConfig;
  config.dataDir = resolve(config.dataDir);
  if (config.secretFile !== null) config.secretFile = resolve(config.secretFile);
  if (config.name.length > limits.nodeNameLengthMax) throw new ConfigError(`--name: at most ${limits.nodeNameLengthMax} characters`);
  if (!(config.suspectAfterMs > config.heartbeatIntervalMs)) {
    throw new ConfigError(`suspect-after-ms (${config.suspectAfterMs}) must be longer than heartbeat-interval-ms (${config.heartbeatIntervalMs})`);
  }
  if (!(config.deadAfterMs > config.suspectAfterMs)) {
    throw new ConfigError(`dead-after-ms (${config.deadAfterMs}) must be longer than suspect-after-ms (${config.suspectAfterMs})`);
  }
  if (config.apiUrl === '') {
    const host = config.apiHost === '0.0.0.0' || config.apiHost === '::' ? lanAddress() : config.apiHost;
    config.apiUrl = `http://${host.includes(':') ? `[${host}]` : host}:${config.apiPort}`;
  }
  return config;
}
