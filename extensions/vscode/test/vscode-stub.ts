// A stand-in for the `vscode` module (which exists only inside VS Code), loaded with `node --require`.
// It implements the few value classes (and the enum and emitter) the extension's pure modules use.
// eslint-disable-next-line @typescript-eslint/no-require-imports
import Module = require('module');

export class Position {
  constructor(
    readonly line: number,
    readonly character: number,
  ) {}
}

export class Range {
  constructor(
    readonly start: Position,
    readonly end: Position,
  ) {}
}

export class SnippetString {
  constructor(readonly value: string) {}
}

export class InlineCompletionItem {
  filterText?: string;
  command?: { title: string; command: string; arguments?: unknown[] };
  constructor(
    public insertText: string | SnippetString,
    public range?: Range,
  ) {}
}

export enum LogLevel {
  Off = 0,
  Trace = 1,
  Debug = 2,
  Info = 3,
  Warning = 4,
  Error = 5,
}

export class EventEmitter<T> {
  private listeners: ((e: T) => void)[] = [];
  readonly event = (listener: (e: T) => void) => {
    this.listeners.push(listener);
    return { dispose: () => (this.listeners = this.listeners.filter((l) => l !== listener)) };
  };
  fire(e: T): void {
    for (const listener of this.listeners) {
      listener(e);
    }
  }
  dispose(): void {
    this.listeners = [];
  }
}

const stub = { Position, Range, SnippetString, InlineCompletionItem, LogLevel, EventEmitter };
const internals = Module as unknown as {
  _resolveFilename: (request: string, ...rest: unknown[]) => string;
  _cache: Record<string, unknown>;
};
const resolve = internals._resolveFilename;
internals._resolveFilename = function (request: string, ...rest: unknown[]): string {
  return request === 'vscode' ? 'vscode' : resolve.call(this, request, ...rest);
};
require.cache.vscode = { id: 'vscode', filename: 'vscode', loaded: true, exports: stub } as unknown as NodeJS.Module;
