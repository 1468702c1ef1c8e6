// Launch Debian's Chromium (never a downloaded browser) with playwright-core.
// PAYGATE_CHROMIUM overrides the path; a missing browser is an error, not a skip.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.PAYGATE_CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** `{context, close}`: a persistent context in a fresh temporary user-data dir. */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium is not installed at ${CHROMIUM} (apt-get install chromium; `
      + '.ci/run installs it). The browser tests never download a browser.');
  }
  const userData = mkdtempSync(join(tmpdir(), 'paygate-chromium-'));
  const context = await chromium.launchPersistentContext(userData, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 520, height: 720 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(userData, { recursive: true, force: true });
    },
  };
}
