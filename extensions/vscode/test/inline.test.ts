import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as vscode from 'vscode';
import { LspInlineItem, toInlineItems } from '../src/inline';

const at = { start: { line: 3, character: 8 }, end: { line: 3, character: 8 } };
const accept = (rank: number) => ({
  title: 'superpie: accepted',
  command: 'superpie.accept',
  arguments: [{ id: 'r1', rank, kind: 'inline' }],
});

test('a list of drafts becomes VS Code items, best first, with range and accept command', () => {
  const items = toInlineItems({
    items: [
      { insertText: 'range(10):', range: at, command: accept(0) },
      { insertText: 'items():', range: at, command: accept(1) },
    ],
  });
  assert.equal(items.length, 2);
  assert.equal(items[0].insertText, 'range(10):');
  assert.ok(items[0].range instanceof vscode.Range);
  assert.deepEqual(items[0].range, new vscode.Range(new vscode.Position(3, 8), new vscode.Position(3, 8)));
  assert.deepEqual(items[1].command, accept(1));
});

test('a bare array and null are accepted', () => {
  assert.equal(toInlineItems([{ insertText: 'x' }]).length, 1);
  assert.deepEqual(toInlineItems(null), []);
  assert.deepEqual(toInlineItems({ items: [] }), []);
});

test('blank and repeated drafts are dropped, the first occurrence kept', () => {
  const items = toInlineItems([
    { insertText: 'a + b', command: accept(0) },
    { insertText: '   ' },
    { insertText: 'a + b', command: accept(2) },
    { insertText: 'a - b', command: accept(3) },
  ]);
  assert.deepEqual(
    items.map((i) => [i.insertText, i.command?.arguments]),
    [
      ['a + b', accept(0).arguments],
      ['a - b', accept(3).arguments],
    ],
  );
});

test('multi-line drafts keep their newlines; no range means "at the cursor"', () => {
  const [item] = toInlineItems([{ insertText: 'if x:\n        return y' }]);
  assert.equal(item.insertText, 'if x:\n        return y');
  assert.equal(item.range, undefined);
  assert.equal(item.command, undefined);
});

test('snippet drafts become SnippetStrings; filterText is kept', () => {
  const raw: LspInlineItem = { insertText: { kind: 'snippet', value: 'print(${1:x})' }, filterText: 'print' };
  const [item] = toInlineItems([raw]);
  assert.ok(item.insertText instanceof vscode.SnippetString);
  assert.equal((item.insertText as vscode.SnippetString).value, 'print(${1:x})');
  assert.equal(item.filterText, 'print');
});

test('maxItems limits the drafts shown', () => {
  const items = toInlineItems([{ insertText: 'a' }, { insertText: 'b' }, { insertText: 'c' }], 2);
  assert.deepEqual(
    items.map((i) => i.insertText),
    ['a', 'b'],
  );
});
