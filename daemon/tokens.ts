// Bearer tokens beyond each node's admin token: created, listed and revoked through the
// replicated state, which keeps only their sha256 hashes. The token itself is shown once.
import { randomBytes } from 'node:crypto';
import { ErrorCode, HivemeshError } from '../protocol/errors.ts';
import { refusalToError } from '../protocol/tasks.ts';
import type { Role, TokenView } from '../protocol/tokens.ts';
import { encodeCommand, type Command } from '../scheduler/state/commands.ts';
import type { ApplyResult, ReplicatedState } from '../scheduler/state/state.ts';
import { generateToken, hashToken } from './secrets.ts';

export interface TokenServiceDeps {
  state: () => ReplicatedState;
  propose: (data: string) => Promise<ApplyResult | null>;
  waitApplied: (index: number) => Promise<void>;
}

export class TokenService {
  private readonly deps: TokenServiceDeps;

  constructor(deps: TokenServiceDeps) {
    this.deps = deps;
  }

  private async run(command: Command): Promise<void> {
    const result = await this.deps.propose(encodeCommand(command));
    if (result === null) throw new HivemeshError(ErrorCode.internal, `the ${command.type} command produced no result`);
    if (!result.ok) throw refusalToError(result.refusal);
    await this.deps.waitApplied(result.index);
  }

  async create(role: Role, name: string): Promise<TokenView & { token: string }> {
    const token = generateToken();
    const id = `tok_${randomBytes(8).toString('hex')}`;
    await this.run({ type: 'token.create', id, name, role, hash: hashToken(token), at: Date.now() });
    return { ...this.view(id), token };
  }

  list(): TokenView[] {
    return this.deps.state().listTokens().map(({ hash: _hash, ...view }) => view);
  }

  view(id: string): TokenView {
    const record = this.deps.state().getToken(id);
    if (record === undefined) throw new HivemeshError(ErrorCode.notFound, `no token ${id}; \`hivemesh token list\` shows the ids`);
    const { hash: _hash, ...view } = record;
    return view;
  }

  async revoke(id: string): Promise<TokenView> {
    this.view(id);
    await this.run({ type: 'token.revoke', id, at: Date.now() });
    return this.view(id);
  }
}
