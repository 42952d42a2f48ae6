// The server's `textDocument/inlineCompletion` answer -> VS Code inline items (ghost text).
// The server answers with its drafts best first; VS Code shows the first and cycles through the rest
// (Alt+] / Alt+[). Each item keeps the server's command, so accepting it runs `superpie.accept`
// (registered by the language client from the server's executeCommand capability) and is counted.
import * as vscode from 'vscode';

/** An LSP position (0-based line, UTF-16 character, like VS Code's). */
export interface LspPosition {
  line: number;
  character: number;
}

/** An LSP range. */
export interface LspRange {
  start: LspPosition;
  end: LspPosition;
}

/** An LSP command. */
export interface LspCommand {
  title: string;
  command: string;
  arguments?: unknown[];
}

/** An LSP 3.18 snippet string (`StringValue`). */
export interface LspStringValue {
  kind: 'snippet';
  value: string;
}

/** An LSP 3.18 inline completion item, as it comes over the wire. */
export interface LspInlineItem {
  insertText: string | LspStringValue;
  filterText?: string;
  range?: LspRange;
  command?: LspCommand;
}

/** What the server may answer. */
export type LspInlineResult = { items: LspInlineItem[] } | LspInlineItem[] | null | undefined;

/** The drafts of an answer as VS Code items: best first, empty and repeated drafts dropped. */
export function toInlineItems(result: LspInlineResult, maxItems = Infinity): vscode.InlineCompletionItem[] {
  const items = Array.isArray(result) ? result : (result?.items ?? []);
  const seen = new Set<string>();
  const out: vscode.InlineCompletionItem[] = [];
  for (const item of items) {
    const text = textOf(item.insertText);
    if (text.trim() === '' || seen.has(text) || out.length >= maxItems) {
      continue;
    }
    seen.add(text);
    out.push(toInlineItem(item));
  }
  return out;
}

/** One server item as a VS Code item (plain text stays text; a snippet stays a snippet). */
export function toInlineItem(item: LspInlineItem): vscode.InlineCompletionItem {
  const insert =
    typeof item.insertText === 'string' ? item.insertText : new vscode.SnippetString(item.insertText.value);
  const result = new vscode.InlineCompletionItem(insert, item.range ? toRange(item.range) : undefined);
  if (item.filterText !== undefined) {
    result.filterText = item.filterText;
  }
  if (item.command) {
    result.command = { title: item.command.title, command: item.command.command, arguments: item.command.arguments };
  }
  return result;
}

/** An LSP range as a VS Code range (both count UTF-16 code units). */
export function toRange(range: LspRange): vscode.Range {
  return new vscode.Range(
    new vscode.Position(range.start.line, range.start.character),
    new vscode.Position(range.end.line, range.end.character),
  );
}

function textOf(insertText: string | LspStringValue): string {
  return typeof insertText === 'string' ? insertText : insertText.value;
}
