// Start `paygate up` (the whole stack: netsim, gRPC, HTTP edge, demo checkout) on free
// ports in a temporary data dir, for the browser tests. PAYGATE_BIN overrides the
// command (default: the repository's .venv/bin/paygate, what `make build` installs).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const PAYGATE = process.env.PAYGATE_BIN || join(REPO, '.venv', 'bin', 'paygate');
const START_TIMEOUT_MS = 90000;

/** `{info, checkoutUrl, gatewayOrigin, pageOrigin, output(), stop()}` once the stack is up. */
export async function startStack() {
  if (!existsSync(PAYGATE)) throw new Error(`${PAYGATE} is missing: run \`make build\` first`);
  const dataDir = mkdtempSync(join(tmpdir(), 'paygate-sdk-'));
  const child = spawn(PAYGATE, ['up', '--data-dir', dataDir, '--grpc', '127.0.0.1:0',
    '--http', '127.0.0.1:0', '--netsim-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const checkoutUrl = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`paygate up did not come up:\n${out}`)), START_TIMEOUT_MS);
    const look = () => {
      const m = /Demo checkout[^\n]*: (http:\/\/\S+)/.exec(out);
      if (m && existsSync(join(dataDir, 'stack.json'))) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on('data', look);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`paygate up exited (${code}):\n${out}`));
    });
  });
  const info = JSON.parse(readFileSync(join(dataDir, 'stack.json'), 'utf8'));
  return {
    info,
    checkoutUrl,
    gatewayOrigin: new URL(info.http).origin,
    pageOrigin: new URL(checkoutUrl).origin,
    output: () => out,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
