// Browser access to the gateway, as Ollama allows it: pages on this machine (localhost,
// 127.0.0.1, 0.0.0.0, any port), desktop-app and editor webviews, and browser extensions may
// call the Ollama and OpenAI routes from the browser; other origins only when the node is
// started with --allow-origin. The gateway still wants a bearer token from every caller:
// CORS only decides which web pages may read the answers.

/** Ollama's default origins (OLLAMA_ORIGINS adds to these there; --allow-origin here). */
export const defaultAllowedOrigins: readonly string[] = [
  ...['localhost', '127.0.0.1', '0.0.0.0', '[::1]'].flatMap((host) => [`http://${host}`, `https://${host}`, `http://${host}:*`, `https://${host}:*`]),
  'app://*', 'file://*', 'tauri://*', 'vscode-webview://*', 'vscode-file://*',
  'chrome-extension://*', 'moz-extension://*', 'safari-web-extension://*',
];

/** An origin pattern: "*" (any origin), or scheme://host[:port] where "*" matches any run of characters. */
const originPatternShape = /^(\*|[a-z][a-z0-9+.-]*:\/\/[^\s/?#]*)$/i;

export function originPatternProblem(pattern: string): string | null {
  return originPatternShape.test(pattern) ? null
    : `${JSON.stringify(pattern)} is not an origin; use the form https://app.example.com or http://10.0.0.5:3000 ("*" matches any run of characters, "*" alone any origin)`;
}

function patternRegExp(pattern: string): RegExp {
  const escaped = pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
  return new RegExp(`^${escaped}$`, 'i');
}

/** Decides, for each Origin header, whether browsers may read the gateway's answers. */
export class OriginPolicy {
  private readonly patterns: RegExp[];

  constructor(extra: readonly string[] = []) {
    this.patterns = [...defaultAllowedOrigins, ...extra].map(patternRegExp);
  }

  allows(origin: string): boolean {
    return this.patterns.some((pattern) => pattern.test(origin));
  }
}
