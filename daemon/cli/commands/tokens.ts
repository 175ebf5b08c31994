// `hivemesh token create|list|revoke`: bearer tokens with roles (admin, operator, viewer).
import { tokenNameLengthMax } from '../../../protocol/limits.ts';
import type { TokenView } from '../../../protocol/tokens.ts';
import { CliError, type ApiClient } from '../client.ts';
import { table } from '../format.ts';

export async function tokenCommand(client: ApiClient, words: string[], flags: { role?: string | undefined; name?: string | undefined; json?: boolean | undefined }): Promise<string> {
  const [action, id] = words;
  const json = flags.json === true;
  switch (action) {
    case 'create': {
      if (flags.role === undefined || flags.name === undefined) throw new CliError('usage: hivemesh token create --role admin|operator|viewer --name NAME', 2);
      // Wrong usage, said in the flags' words before anything is sent (the daemon would say
      // "invalid body"). The roles live in a TypeBox module (about 0.1 s to load): only here.
      const { roles } = await import('../../../protocol/tokens.ts');
      if (!(roles as readonly string[]).includes(flags.role)) {
        throw new CliError(`--role must be one of ${roles.join('|')}, got "${flags.role}". Run \`hivemesh token --help\` for its flags.`, 2);
      }
      if (flags.name === '' || flags.name.length > tokenNameLengthMax) {
        throw new CliError(`--name must have 1 to ${tokenNameLengthMax} characters (it has ${flags.name.length}). Run \`hivemesh token --help\` for its flags.`, 2);
      }
      const { body } = await client.request<TokenView & { token: string }>('POST', '/api/tokens', { role: flags.role, name: flags.name });
      if (json) return JSON.stringify(body, null, 2);
      return `${body.token}\n(token ${body.id}, role ${body.role}, name "${body.name}": shown only now; it works on every node)`;
    }
    case 'list': {
      const { tokens } = await client.get<{ tokens: TokenView[] }>('/api/tokens');
      // The API's shape, as nodes, status and tasks print it.
      if (json) return JSON.stringify({ tokens }, null, 2);
      return table(['ID', 'NAME', 'ROLE', 'CREATED', 'REVOKED'], tokens.map((token) => [
        token.id, token.name, token.role, new Date(token.createdAt).toISOString(), token.revokedAt === null ? '-' : new Date(token.revokedAt).toISOString(),
      ]));
    }
    case 'revoke': {
      if (id === undefined) throw new CliError('usage: hivemesh token revoke ID (see `hivemesh token list`)', 2);
      const { body } = await client.request<TokenView>('DELETE', `/api/tokens/${encodeURIComponent(id)}`);
      return json ? JSON.stringify(body, null, 2) : `token ${body.id} revoked`;
    }
    default:
      throw new CliError('usage: hivemesh token create --role ROLE --name NAME | token list | token revoke ID', 2);
  }
}
