// The settings' options as the real server reads them: `superpie serve` must accept every key the
// extension sends (no "unknown option" or invalid-value report). Skipped where the server is not
// installed (SUPERPIE_SERVER, else the repository's .venv/bin/superpie).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  ExitNotification,
  InitializeRequest,
  InitializedNotification,
  ShowMessageNotification,
  ShutdownRequest,
  createProtocolConnection,
  StreamMessageReader,
  StreamMessageWriter,
} from 'vscode-languageserver-protocol/node';
import { toServerExecutable, toServerOptions } from '../src/settings';

const server = process.env.SUPERPIE_SERVER ?? join(__dirname, '..', '..', '..', '..', '.venv', 'bin', 'superpie');

test('the real server accepts every option the extension sends', { timeout: 60_000 }, async (t) => {
  if (!existsSync(server)) {
    t.skip(`no server at ${server}`);
    return;
  }
  const values: Record<string, unknown> = {
    'model.path': mkdtempSync(join(tmpdir(), 'superpie-no-model-')), // fails fast instead of loading a model
    'completion.drafts': 3,
    'completion.strategy': 'superposed',
    'watcher.enabled': false,
  };
  const options = toServerOptions((key) => values[key]);
  // The process exactly as the language client starts it (no `--stdio`: see toServerExecutable).
  const executable = toServerExecutable((key) => ({ 'server.path': server })[key]);
  const child = spawn(executable.command, executable.args ?? [], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<never>((_resolve, reject) => {
    child.on('exit', (code) => reject(new Error(`the server exited (${code}): ${stderr.slice(-2000)}`)));
  });
  const connection = createProtocolConnection(
    new StreamMessageReader(child.stdout),
    new StreamMessageWriter(child.stdin),
  );
  const messages: string[] = [];
  connection.onNotification(ShowMessageNotification.type, (p) => {
    messages.push(p.message);
  });
  connection.listen();
  try {
    const result = await Promise.race([
      exited,
      connection.sendRequest(InitializeRequest.type, {
        processId: process.pid,
        rootUri: null,
        capabilities: {},
        initializationOptions: options,
      }),
    ]);
    assert.ok(result.capabilities.inlineCompletionProvider, 'no inline completion');
    assert.ok(result.capabilities.completionProvider, 'no completion');
    assert.ok(result.capabilities.executeCommandProvider?.commands.includes('superpie.stats'));
    await connection.sendNotification(InitializedNotification.type, {});
    // The model load fails (an empty directory): its error arrives after any option report would.
    const deadline = Date.now() + 30_000;
    while (!messages.some((m) => /model/i.test(m)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(
      messages.filter((m) => /unknown option|expected|out of range|must not/.test(m)),
      [],
    );
    await Promise.race([exited, connection.sendRequest(ShutdownRequest.type)]);
    await connection.sendNotification(ExitNotification.type);
  } finally {
    exited.catch(() => undefined);
    connection.dispose();
    child.kill();
  }
});
