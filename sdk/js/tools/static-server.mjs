// A tiny HTTP server on 127.0.0.1 (a free port): serves sdk/js/src files and pages
// given as strings. Used as a *third* origin (neither the merchant page nor the gateway).
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join, basename } from 'node:path';

const SRC = fileURLToPath(new URL('../src/', import.meta.url));
const TYPES = { '.js': 'text/javascript', '.html': 'text/html', '.css': 'text/css' };

/** Start it: `pages` maps a path ("/evil.html") to HTML; `/src/<file>` serves the SDK. */
export async function startServer(pages = {}) {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (pages[path] !== undefined) {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(pages[path]);
      return;
    }
    if (path.startsWith('/src/')) {
      const name = basename(path);
      const ext = name.slice(name.lastIndexOf('.'));
      try {
        const body = await readFile(join(SRC, name));
        res.writeHead(200, { 'Content-Type': `${TYPES[ext] || 'application/octet-stream'}; charset=utf-8` });
        res.end(body);
        return;
      } catch {
        // fall through to 404
      }
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return { origin: `http://127.0.0.1:${port}`, close: () => new Promise((r) => {
      server.close(r);
      server.closeAllConnections();   // the browser keeps connections alive
    }),
  };
}
