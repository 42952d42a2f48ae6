// `superpie.trace.server` shows the LSP messages in the `superpie` output channel. The language client
// traces only into a channel whose log level is Trace (and then traces at least the messages, whatever the
// setting says), so the setting alone showed nothing until the user also raised the channel's log level,
// and raising the level traced even with the setting off. This view of the channel reports Trace exactly
// while the setting asks for a trace, and writes the trace at the channel's info level: the setting decides.
import * as vscode from 'vscode';

/** The `superpie` output channel as the language client's trace channel. */
export class TraceChannel implements vscode.LogOutputChannel {
  private enabled = false;
  private readonly changed = new vscode.EventEmitter<vscode.LogLevel>();
  readonly onDidChangeLogLevel = this.changed.event;

  constructor(
    private readonly channel: vscode.LogOutputChannel,
    setting: unknown,
  ) {
    this.update(setting);
  }

  /** The value of `superpie.trace.server` changed (or not): tell the client when tracing turns on or off. */
  update(setting: unknown): void {
    const enabled = typeof setting === 'string' && setting !== 'off';
    if (enabled !== this.enabled) {
      this.enabled = enabled;
      this.changed.fire(this.logLevel);
    }
  }

  get logLevel(): vscode.LogLevel {
    return this.enabled ? vscode.LogLevel.Trace : this.channel.logLevel;
  }

  get name(): string {
    return this.channel.name;
  }

  trace(message: string, ...args: unknown[]): void {
    if (this.enabled) {
      this.channel.info(message, ...args);
    }
  }

  debug(message: string, ...args: unknown[]): void {
    this.channel.debug(message, ...args);
  }

  info(message: string, ...args: unknown[]): void {
    this.channel.info(message, ...args);
  }

  warn(message: string, ...args: unknown[]): void {
    this.channel.warn(message, ...args);
  }

  error(error: string | Error, ...args: unknown[]): void {
    this.channel.error(error, ...args);
  }

  append(value: string): void {
    this.channel.append(value);
  }

  appendLine(value: string): void {
    this.channel.appendLine(value);
  }

  replace(value: string): void {
    this.channel.replace(value);
  }

  clear(): void {
    this.channel.clear();
  }

  show(column?: vscode.ViewColumn | boolean, preserveFocus?: boolean): void {
    if (typeof column === 'boolean') {
      this.channel.show(column);
    } else {
      this.channel.show(column, preserveFocus);
    }
  }

  hide(): void {
    this.channel.hide();
  }

  /** The channel itself belongs to the extension, which disposes of it. */
  dispose(): void {
    this.changed.dispose();
  }
}
