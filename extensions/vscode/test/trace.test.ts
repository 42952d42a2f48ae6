import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as vscode from 'vscode';
import { TraceChannel } from '../src/trace';

/** A log channel at the default level that keeps what is written to it. */
function channel(): vscode.LogOutputChannel & { lines: string[] } {
  const lines: string[] = [];
  const write = (level: string) => (message: string) => void lines.push(`${level} ${message}`);
  return {
    name: 'superpie',
    logLevel: vscode.LogLevel.Info,
    lines,
    trace: write('trace'),
    debug: write('debug'),
    info: write('info'),
    warn: write('warn'),
    error: (e: string | Error) => void lines.push(`error ${String(e)}`),
  } as unknown as vscode.LogOutputChannel & { lines: string[] };
}

test('superpie.trace.server alone turns the language client tracing on and off', () => {
  const out = channel();
  const trace = new TraceChannel(out, 'off');
  const levels: vscode.LogLevel[] = [];
  trace.onDidChangeLogLevel((level) => levels.push(level));
  // off: the channel's own level, which the client reads as "no trace"
  assert.equal(trace.logLevel, vscode.LogLevel.Info);
  trace.trace("Sending request 'initialize - (0)'.");
  assert.deepEqual(out.lines, []);

  trace.update('verbose');
  assert.equal(trace.logLevel, vscode.LogLevel.Trace);
  assert.deepEqual(levels, [vscode.LogLevel.Trace]);
  trace.trace("Sending request 'initialize - (0)'.");
  assert.deepEqual(out.lines, ["info Sending request 'initialize - (0)'."]); // written at the channel's level

  trace.update('messages'); // still on: the client re-reads the verbosity itself
  assert.deepEqual(levels, [vscode.LogLevel.Trace]);
  trace.update('off');
  assert.deepEqual(levels, [vscode.LogLevel.Trace, vscode.LogLevel.Info]);
  trace.info('kept');
  assert.deepEqual(out.lines.at(-1), 'info kept');
});

test('tracing is on from the start when the setting asks for it', () => {
  assert.equal(new TraceChannel(channel(), 'messages').logLevel, vscode.LogLevel.Trace);
  assert.equal(new TraceChannel(channel(), undefined).logLevel, vscode.LogLevel.Info);
});
