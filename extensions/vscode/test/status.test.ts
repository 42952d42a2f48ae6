import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StatusModel } from '../src/status';
import { formatStats } from '../src/stats';

test('starting -> loading with progress -> ready with latency', () => {
  const s = new StatusModel();
  s.starting();
  assert.equal(s.view().text, '$(loading~spin) superpie');
  s.progress('begin', 'loading the default model');
  assert.equal(s.state, 'loading');
  assert.match(s.view().tooltip, /loading the default model/);
  s.progress('report', 'converting', 40);
  assert.match(s.view().tooltip, /converting 40%/);
  s.progress('end', 'model ready (1.2 s)');
  assert.equal(s.view().text, '$(check) superpie');
  s.answered(123.4);
  assert.equal(s.view().text, '$(check) superpie 123 ms');
});

test('a failed load shows an error', () => {
  const s = new StatusModel();
  s.progress('begin');
  s.progress('end', 'cannot load the model: no such directory');
  assert.equal(s.state, 'error');
  assert.equal(s.view().text, '$(error) superpie');
  assert.match(s.view().tooltip, /no such directory/);
});

test('stats fill the tooltip and can mark the model ready or failed', () => {
  const s = new StatusModel();
  s.starting();
  s.stats({
    latency_ms: { all: { count: 3, p50: 80, p95: 200 }, inline: { count: 2, p50: 70.4, p95: 150 } },
    model: { name: 'tiny-llama', loaded: true, load_ms: 900 },
  });
  assert.equal(s.state, 'ready');
  assert.match(s.view().tooltip, /model: tiny-llama/);
  assert.match(s.view().tooltip, /p50 70 ms, p95 150 ms/);
  s.stats({ model: { loaded: false, error: 'out of memory' } });
  assert.equal(s.state, 'error');
});

test('formatStats renders a latency table and the raw JSON', () => {
  const md = formatStats({ latency_ms: { inline: { count: 2, p50: 70, p95: 150 } }, model: { name: 'm', loaded: true } });
  assert.match(md, /\| inline \| 2 \| 70 \| 150 \|/);
  assert.match(md, /"latency_ms"/);
  assert.match(formatStats(null), /null/);
});
