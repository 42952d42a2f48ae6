// VS Code settings -> the server's options (`initializationOptions` and `workspace/didChangeConfiguration`).
// The server's option tree lives in lsp/options.py; each server setting here is `superpie.<section>.<camelKey>`
// and is sent under the same dotted path. Client-only settings (how to start the server, whether to ask
// for ghost text) are never sent, so the server does not report them as unknown.
import type { Executable } from 'vscode-languageclient/node';

/** Settings that map one-to-one onto the server's options, with the server's defaults. */
export const SERVER_SETTINGS: Readonly<Record<string, unknown>> = {
  'model.path': null,
  'model.dtype': null,
  'model.threads': null,
  'cache.mode': 'pie',
  'cache.memoryBudgetMb': 2048,
  'cache.contextTokens': 4096,
  'cache.staleThreshold': 16384,
  'cache.idleRefreshMs': 1500,
  'completion.drafts': 1,
  'completion.strategy': null,
  'completion.maxTokensInline': 16,
  'completion.maxTokensMenu': 48,
  'completion.inlineMultiline': false,
  'completion.menuMultiline': true,
  'completion.readyTimeoutMs': 2000,
  'decoding.speculate': true,
  'monitors.enabled': true,
  'monitors.jediBudgetMs': 150,
  'watcher.enabled': true,
  'watcher.maxFileKb': 1000,
  'watcher.debounceMs': 200,
  logLevel: 'info',
};

/** String settings whose empty value means "the server decides" (sent as null). */
export const EMPTY_IS_NULL: ReadonlySet<string> = new Set(['model.path', 'model.dtype', 'completion.strategy']);

/** Settings the extension itself uses; never sent to the server. */
export const CLIENT_SETTINGS: Readonly<Record<string, unknown>> = {
  'server.path': 'superpie',
  'server.args': [],
  'inline.enabled': true,
  'trace.server': 'off',
};

/** Reads one setting (relative to `superpie.`), as `WorkspaceConfiguration.get` does. */
export type SettingReader = (key: string) => unknown;

/** The server's options object for the current settings: nested by the dotted keys. */
export function toServerOptions(get: SettingReader): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, fallback] of Object.entries(SERVER_SETTINGS)) {
    setPath(out, key, normalize(key, get(key), fallback));
  }
  return out;
}

/** How the extension starts the server: the command and its arguments. */
export interface ServerCommand {
  command: string;
  args: string[];
}

/**
 * The language client's description of the server process. It names no `transport`: with
 * `TransportKind.stdio` the client appends `--stdio` to the arguments (a flag `superpie serve` did not
 * take), while without one it talks over the process's stdin and stdout all the same, and the process is
 * exactly `<server.path> serve <server.args>`, as the settings say.
 */
export function toServerExecutable(get: SettingReader): Executable {
  const { command, args } = toServerCommand(get);
  return { command, args };
}

/** The server command line for the current settings (`superpie serve` unless configured). */
export function toServerCommand(get: SettingReader): ServerCommand {
  const path = get('server.path');
  const extra = get('server.args');
  const command = typeof path === 'string' && path.trim() !== '' ? path.trim() : 'superpie';
  const args = Array.isArray(extra) ? extra.filter((a): a is string => typeof a === 'string') : [];
  return { command, args: ['serve', ...args] };
}

/** Whether a configuration change needs the server process restarted (rather than re-configured). */
export function needsRestart(affects: (section: string) => boolean): boolean {
  return affects('superpie.server');
}

function normalize(key: string, value: unknown, fallback: unknown): unknown {
  if (value === undefined) {
    return fallback;
  }
  if (EMPTY_IS_NULL.has(key) && typeof value === 'string') {
    const trimmed = value.trim();
    if (trimmed === '') {
      return null;
    }
    return key === 'model.path' ? expandHome(trimmed) : trimmed;
  }
  return value;
}

function expandHome(path: string): string {
  const home = process.env.HOME ?? process.env.USERPROFILE;
  return home && (path === '~' || path.startsWith('~/')) ? home + path.slice(1) : path;
}

function setPath(target: Record<string, unknown>, dotted: string, value: unknown): void {
  const parts = dotted.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    node = (node[part] ??= {}) as Record<string, unknown>;
  }
  node[parts[parts.length - 1]] = value;
}
