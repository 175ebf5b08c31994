// Serves the dashboard's static files from web-ui/static without a token (the page asks
// for one and sends it with its API calls). Files are read once and kept in memory:
// the dashboard is small and a daemon must not touch the disk per request.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { App } from '../app.ts';

const root = fileURLToPath(new URL('../../../web-ui/static/', import.meta.url));
const types: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
};

function collect(directory: string, files: Map<string, { body: Buffer; type: string }>): void {
  let names: string[];
  try {
    names = readdirSync(directory);
  } catch {
    return;
  }
  for (const name of names) {
    const path = join(directory, name);
    if (statSync(path).isDirectory()) collect(path, files);
    else files.set('/' + relative(root, path).split('\\').join('/'), { body: readFileSync(path), type: types[extname(name)] ?? 'application/octet-stream' });
  }
}

// The page loads nothing from elsewhere and sets no inline script or style, so the
// strictest policy fits; it blunts any markup that slipped into data shown by the page.
const securityHeaders = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

export function staticRoutes() {
  return async (app: App) => {
    const files = new Map<string, { body: Buffer; type: string }>();
    collect(root, files);
    const index = files.get('/index.html');
    app.get('/', async (_request, reply) => {
      if (index === undefined) return reply.code(404).type('text/plain').send('the dashboard is not installed (web-ui/static/index.html is missing)');
      return reply.type(index.type).header('cache-control', 'no-cache').headers(securityHeaders).send(index.body);
    });
    app.get('/ui/*', async (request, reply) => {
      const path = '/' + ((request.params as { '*': string })['*'] ?? '');
      const file = files.get(path);
      if (file === undefined) return reply.code(404).type('text/plain').send(`no dashboard file ${path}`);
      return reply.type(file.type).header('cache-control', 'no-cache').headers(securityHeaders).send(file.body);
    });
  };
}
