// Drives one headless Chromium for tests/extensions/test_vscode.py: the test (Python) writes one JSON
// request a line on stdin, this answers one JSON line on stdout ({ok, value} or {ok: false, error}).
// Playwright's own browser download is not reachable offline, so it launches a browser that is
// installed (Debian's chromium) by its path. The test keeps the logic; this only moves keys and reads
// the page, so a failing check shows up in Python with the page's state, not as a hung browser.
import process from 'node:process';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

let browser;
let page;

const ops = {
  async launch({ executablePath, url, width, height, noSandbox }) {
    browser = await chromium.launch({ executablePath, args: noSandbox ? ['--no-sandbox'] : [] });
    page = await browser.newPage({ viewport: { width, height } });
    await page.goto(url);
  },
  // An expression (or a function's source and its argument) evaluated in the page.
  async eval({ js, arg }) {
    return page.evaluate(js.trimStart().startsWith('(') ? `(${js})(${JSON.stringify(arg ?? null)})` : js);
  },
  async press({ key, times }) {
    for (let i = 0; i < (times ?? 1); i++) {
      await page.keyboard.press(key);
    }
  },
  async type({ text, delay }) {
    await page.keyboard.type(text, { delay: delay ?? 0 });
  },
  // Text put in at once, as a paste is (the editor neither closes brackets nor indents it).
  async insert({ text }) {
    await page.keyboard.insertText(text);
  },
  async wait({ selector, timeout, state }) {
    await page.waitForSelector(selector, { timeout: timeout ?? 30_000, state: state ?? 'visible' });
  },
  async click({ selector, count }) {
    await page.click(selector, { clickCount: count ?? 1 });
  },
  async screenshot({ path }) {
    await page.screenshot({ path });
  },
  async close() {
    await browser?.close();
    browser = undefined;
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const { op, ...args } = JSON.parse(line);
  let reply;
  try {
    reply = { ok: true, value: (await ops[op](args)) ?? null };
  } catch (err) {
    reply = { ok: false, error: String(err?.stack ?? err) };
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
  if (op === 'close') {
    break;
  }
}
await browser?.close();
