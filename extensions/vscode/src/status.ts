// What the status bar item says: the server's state (starting, model loading, ready, failed) and the
// latency of the last inline request. Pure, so it is tested without VS Code.

/** The server's state as the status bar shows it. */
export type ServerState = 'stopped' | 'starting' | 'loading' | 'ready' | 'error';

/** Text and tooltip of the status bar item. */
export interface StatusView {
  text: string;
  tooltip: string;
}

/** `superpie.stats` as far as the status bar reads it. */
export interface StatsSummary {
  latency_ms?: Record<string, { count: number; p50: number | null; p95: number | null }>;
  model?: { name?: string | null; loaded?: boolean; load_ms?: number; error?: string | null };
}

/** The state machine behind the status bar item. */
export class StatusModel {
  state: ServerState = 'stopped';
  detail = '';
  lastLatencyMs: number | null = null;
  p50: number | null = null;
  p95: number | null = null;
  model = '';

  /** The server process is starting. */
  starting(): void {
    this.set('starting', '');
  }

  /** Work-done progress from the server (the model load). */
  progress(kind: 'begin' | 'report' | 'end', message?: string, percentage?: number): void {
    if (kind === 'end') {
      const failed = message !== undefined && /cannot|error|fail/i.test(message);
      this.set(failed ? 'error' : 'ready', message ?? '');
      return;
    }
    const pct = percentage !== undefined ? ` ${Math.round(percentage)}%` : '';
    this.set('loading', `${message ?? 'loading the model'}${pct}`);
  }

  /** An inline request came back after `ms` milliseconds. */
  answered(ms: number): void {
    this.lastLatencyMs = ms;
    if (this.state === 'starting' || this.state === 'loading') {
      this.state = 'ready';
    }
  }

  /** Numbers from `superpie.stats`. */
  stats(stats: StatsSummary): void {
    const all = stats.latency_ms?.inline ?? stats.latency_ms?.all;
    this.p50 = all?.p50 ?? null;
    this.p95 = all?.p95 ?? null;
    this.model = stats.model?.name ?? this.model;
    if (stats.model?.error) {
      this.set('error', stats.model.error);
    } else if (stats.model?.loaded && this.state !== 'ready') {
      this.set('ready', '');
    }
  }

  /** The server stopped (crashed, restarted, or the extension was deactivated). */
  stopped(reason = ''): void {
    this.set('stopped', reason);
  }

  /** Text and tooltip for the current state. */
  view(): StatusView {
    const tip = [`superpie: ${this.state}${this.detail ? ` (${this.detail})` : ''}`];
    if (this.model) {
      tip.push(`model: ${this.model}`);
    }
    if (this.p50 !== null) {
      tip.push(`inline latency p50 ${fmt(this.p50)}, p95 ${fmt(this.p95)}`);
    }
    tip.push('Click for statistics');
    return { text: this.text(), tooltip: tip.join('\n') };
  }

  private text(): string {
    switch (this.state) {
      case 'starting':
        return '$(loading~spin) superpie';
      case 'loading':
        return '$(loading~spin) superpie: loading model';
      case 'error':
        return '$(error) superpie';
      case 'stopped':
        return '$(circle-slash) superpie';
      case 'ready':
        return this.lastLatencyMs === null ? '$(check) superpie' : `$(check) superpie ${fmt(this.lastLatencyMs)}`;
    }
  }

  private set(state: ServerState, detail: string): void {
    this.state = state;
    this.detail = detail;
  }
}

function fmt(ms: number | null): string {
  return ms === null ? '?' : `${Math.round(ms)} ms`;
}
