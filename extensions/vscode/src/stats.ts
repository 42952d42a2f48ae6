// `superpie.stats` as a Markdown report (shown by the "superpie: Show Statistics" command).

/** A readable Markdown report of the server's statistics (the raw JSON follows it). */
export function formatStats(stats: unknown): string {
  const lines = ['# superpie statistics', ''];
  const s = (stats ?? {}) as Record<string, Record<string, unknown>>;
  const latency = (s.latency_ms ?? {}) as Record<string, { count: number; p50: number | null; p95: number | null }>;
  if (Object.keys(latency).length > 0) {
    lines.push('| requests | count | p50 ms | p95 ms |', '|---|---:|---:|---:|');
    for (const [kind, v] of Object.entries(latency)) {
      lines.push(`| ${kind} | ${v.count} | ${v.p50 ?? '-'} | ${v.p95 ?? '-'} |`);
    }
    lines.push('');
  }
  const model = s.model ?? {};
  if (model.name !== undefined) {
    lines.push(`Model: \`${String(model.name)}\`, loaded: ${String(model.loaded)}, load ${String(model.load_ms)} ms`, '');
  }
  lines.push('```json', JSON.stringify(stats, null, 2), '```', '');
  return lines.join('\n');
}
