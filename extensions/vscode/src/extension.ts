// The superpie extension: starts `superpie serve`, shows its drafts as ghost text and in the suggest
// menu, forwards settings, and keeps a status bar item. Completion logic lives in the server.
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  FeatureState,
  InlineCompletionRequest,
  LanguageClient,
  LanguageClientOptions,
  State,
  StaticFeature,
  WorkDoneProgress,
  WorkDoneProgressCreateRequest,
} from 'vscode-languageclient/node';
import { LspInlineResult, toInlineItems } from './inline';
import {
  CLIENT_SETTINGS,
  SettingReader,
  needsRestart,
  toServerCommand,
  toServerExecutable,
  toServerOptions,
} from './settings';
import { formatStats } from './stats';
import { StatsSummary, StatusModel } from './status';
import { TraceChannel } from './trace';

const STATS_INTERVAL_MS = 10_000; // refresh the tooltip's p50/p95 at most this often

let client: LanguageClient | undefined;
let lastStatsAt = 0;
const status = new StatusModel();
let statusItem: vscode.StatusBarItem | undefined;
let output: vscode.LogOutputChannel | undefined;
let trace: TraceChannel | undefined;

/** Entry point: VS Code calls it when a Python file opens. */
export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel('superpie', { log: true });
  trace = new TraceChannel(output, settings()('trace.server'));
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.command = 'superpie.showStats';
  statusItem.show();
  context.subscriptions.push(
    output,
    trace,
    statusItem,
    vscode.commands.registerCommand('superpie.showStats', showStats),
    vscode.commands.registerCommand('superpie.restart', restart),
    vscode.commands.registerCommand('superpie.toggleInline', toggleInline),
    vscode.workspace.onDidChangeConfiguration(onConfigurationChanged),
  );
  await startClient();
}

/** VS Code calls it on shutdown: stop the server cleanly. */
export async function deactivate(): Promise<void> {
  await stopClient();
}

function settings(): SettingReader {
  const config = vscode.workspace.getConfiguration('superpie');
  return (key) => config.get(key, CLIENT_SETTINGS[key] as never);
}

function createClient(): LanguageClient {
  const serverOptions = toServerExecutable(settings());
  const clientOptions: LanguageClientOptions = {
    documentSelector: [
      { scheme: 'file', language: 'python' },
      { scheme: 'untitled', language: 'python' },
    ],
    initializationOptions: toServerOptions(settings()),
    outputChannel: output,
    traceOutputChannel: trace,
    middleware: {
      provideInlineCompletionItems: async (document, position, context, token) => {
        if (!settings()('inline.enabled') || !client) {
          return null;
        }
        const params = client.code2ProtocolConverter.asInlineCompletionParams(document, position, context);
        const started = Date.now();
        const result = (await client.sendRequest(InlineCompletionRequest.type, params, token)) as LspInlineResult;
        if (token.isCancellationRequested) {
          return null;
        }
        status.answered(Date.now() - started);
        void refreshStats(false);
        return toInlineItems(result);
      },
      workspace: {
        // The server pulls `superpie` when a change notification carries no settings: answer with its options.
        configuration: (params) =>
          params.items.map((item) => (item.section === 'superpie' ? toServerOptions(settings()) : null)),
      },
    },
  };
  return new LanguageClient('superpie', 'superpie', serverOptions, clientOptions);
}

async function startClient(): Promise<void> {
  const starting = createClient();
  client = starting;
  starting.onDidChangeState((e) => {
    if (e.newState === State.Starting) {
      status.starting();
    } else if (e.newState === State.Running) {
      void refreshStats(true); // also after the client restarted a server that failed or crashed
    } else if (e.newState === State.Stopped) {
      status.stopped();
    }
    render();
  });
  starting.registerFeature(new ProgressInStatusBar(starting));
  status.starting();
  render();
  try {
    await starting.start();
  } catch (err) {
    status.stopped(String(err));
    render();
    void vscode.window.showErrorMessage(
      `superpie: cannot start '${toServerCommand(settings()).command}': ${String(err)}. ` +
        'Install superpie or set "superpie.server.path".',
    );
    return;
  }
  void refreshStats(true);
}

async function stopClient(): Promise<void> {
  const running = client;
  client = undefined;
  if (running && running.state === State.Running) {
    await running.stop();
  }
}

// The server reports the model load as work-done progress. The language client's own progress feature
// would show it as a notification; this feature shows it in the status bar item instead (and as window
// progress). A feature, because the client initializes its features, its own progress feature first,
// on every server it starts: also when it starts the server again after a failed start or a crash.
class ProgressInStatusBar implements StaticFeature {
  constructor(private readonly running: LanguageClient) {}

  fillClientCapabilities(): void {
    // the client's progress feature already announces `window.workDoneProgress`
  }

  initialize(): void {
    watchProgress(this.running);
  }

  getState(): FeatureState {
    return { kind: 'static' };
  }

  clear(): void {}
}

function watchProgress(running: LanguageClient): void {
  running.onRequest(WorkDoneProgressCreateRequest.type, ({ token }) => {
    let finish: (() => void) | undefined;
    void vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'superpie' }, () => {
      return new Promise<void>((resolve) => (finish = resolve));
    });
    const sub = running.onProgress(WorkDoneProgress.type, token, (value) => {
      const pct = value.kind === 'end' ? undefined : value.percentage;
      status.progress(value.kind, value.message, pct);
      render();
      if (value.kind === 'end') {
        finish?.();
        sub.dispose();
        void refreshStats(true);
      }
    });
  });
}

async function refreshStats(force: boolean): Promise<StatsSummary | undefined> {
  if (!client || client.state !== State.Running || (!force && Date.now() - lastStatsAt < STATS_INTERVAL_MS)) {
    return undefined;
  }
  lastStatsAt = Date.now();
  try {
    const stats = (await client.sendRequest(ExecuteCommandRequest.type, { command: 'superpie.stats' })) as StatsSummary;
    status.stats(stats ?? {});
    render();
    return stats;
  } catch (err) {
    output?.warn(`superpie.stats failed: ${String(err)}`);
    return undefined;
  }
}

function render(): void {
  if (statusItem) {
    const view = status.view();
    statusItem.text = view.text;
    statusItem.tooltip = view.tooltip;
  }
}

async function showStats(): Promise<void> {
  const stats = await refreshStats(true);
  if (stats === undefined) {
    void vscode.window.showWarningMessage('superpie: the server is not running.');
    return;
  }
  const doc = await vscode.workspace.openTextDocument({ language: 'markdown', content: formatStats(stats) });
  await vscode.window.showTextDocument(doc, { preview: true });
}

async function restart(): Promise<void> {
  await stopClient();
  await startClient();
}

async function toggleInline(): Promise<void> {
  const config = vscode.workspace.getConfiguration('superpie');
  const enabled = config.get<boolean>('inline.enabled', true);
  await config.update('inline.enabled', !enabled, vscode.ConfigurationTarget.Global);
  void vscode.window.showInformationMessage(`superpie: ghost text ${enabled ? 'off' : 'on'}`);
}

async function onConfigurationChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
  if (!e.affectsConfiguration('superpie')) {
    return;
  }
  trace?.update(settings()('trace.server'));
  if (needsRestart((section) => e.affectsConfiguration(section))) {
    await restart();
    return;
  }
  if (client?.state === State.Running) {
    await client.sendNotification(DidChangeConfigurationNotification.type, {
      settings: { superpie: toServerOptions(settings()) },
    });
  }
}
