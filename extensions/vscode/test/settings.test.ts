import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLIENT_SETTINGS, EMPTY_IS_NULL, SERVER_SETTINGS, needsRestart, toServerCommand, toServerExecutable, toServerOptions } from '../src/settings';

const root = join(__dirname, '..', '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const contributed: Record<string, { default: unknown }> = pkg.contributes.configuration.properties;

function reader(values: Record<string, unknown>) {
  return (key: string) => values[key];
}

test('every server setting is contributed in package.json with the same default', () => {
  for (const [key, value] of Object.entries(SERVER_SETTINGS)) {
    const prop = contributed[`superpie.${key}`];
    assert.ok(prop, `superpie.${key} missing from package.json`);
    const shown = EMPTY_IS_NULL.has(key) && prop.default === '' ? null : prop.default;
    assert.deepEqual(shown, value, key);
  }
});

test('package.json contributes no setting the extension does not know', () => {
  const known = new Set([...Object.keys(SERVER_SETTINGS), ...Object.keys(CLIENT_SETTINGS)]);
  for (const key of Object.keys(contributed)) {
    assert.ok(known.has(key.replace(/^superpie\./, '')), key);
  }
});

test('defaults become the nested camelCase options tree of the server', () => {
  const opts = toServerOptions(reader({}));
  assert.deepEqual(opts, {
    model: { path: null, dtype: null, threads: null },
    cache: { mode: 'pie', memoryBudgetMb: 2048, contextTokens: 4096, staleThreshold: 16384, idleRefreshMs: 1500 },
    completion: {
      drafts: 1,
      strategy: null,
      maxTokensInline: 16,
      maxTokensMenu: 48,
      inlineMultiline: false,
      menuMultiline: true,
      readyTimeoutMs: 2000,
    },
    decoding: { speculate: true },
    monitors: { enabled: true, jediBudgetMs: 150 },
    watcher: { enabled: true, maxFileKb: 1000, debounceMs: 200 },
    logLevel: 'info',
  });
});

test('user values are sent; client-only settings are not', () => {
  const opts = toServerOptions(
    reader({
      'model.path': '  /models/tiny ',
      'completion.drafts': 3,
      'completion.strategy': 'superposed',
      'monitors.enabled': false,
      'server.path': '/opt/superpie',
      'inline.enabled': false,
    }),
  ) as Record<string, Record<string, unknown>>;
  assert.equal(opts.model.path, '/models/tiny');
  assert.equal(opts.completion.drafts, 3);
  assert.equal(opts.completion.strategy, 'superposed');
  assert.equal(opts.monitors.enabled, false);
  assert.equal('server' in opts || 'inline' in opts || 'trace' in opts, false);
});

test('an empty model path means the default model; ~ expands to the home directory', () => {
  const empty = toServerOptions(reader({ 'model.path': '   ', 'completion.strategy': '' })) as Record<
    string,
    Record<string, unknown>
  >;
  assert.equal(empty.model.path, null);
  assert.equal(empty.completion.strategy, null);
  const home = toServerOptions(reader({ 'model.path': '~/models/x' })) as Record<string, Record<string, unknown>>;
  assert.equal(home.model.path, `${process.env.HOME}/models/x`);
});

test('the server command is `<path> serve <args>`', () => {
  assert.deepEqual(toServerCommand(reader({})), { command: 'superpie', args: ['serve'] });
  assert.deepEqual(
    toServerCommand(reader({ 'server.path': '/venv/bin/superpie', 'server.args': ['--log-level', 'debug', 3] })),
    { command: '/venv/bin/superpie', args: ['serve', '--log-level', 'debug'] },
  );
});

test('the language client runs exactly `<path> serve <args>`: no transport, so no `--stdio` is appended', () => {
  const executable = toServerExecutable(reader({ 'server.path': '/venv/bin/superpie', 'server.args': ['--model', 'm'] }));
  // vscode-languageclient appends `--stdio` for TransportKind.stdio and talks over stdio without one.
  assert.equal(executable.transport, undefined);
  assert.deepEqual(executable, { command: '/venv/bin/superpie', args: ['serve', '--model', 'm'] });
});

test('only server settings restart the server', () => {
  assert.equal(needsRestart((s) => s === 'superpie.server'), true);
  assert.equal(needsRestart((s) => s === 'superpie.completion'), false);
});

// The server's defaults live in its configuration tree (completion/config); tests/lsp/test_config_surfaces.py
// holds package.json's settings to it, and the first test here holds SERVER_SETTINGS to package.json.
