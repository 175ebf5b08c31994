// Bearer tokens beyond each node's admin token: created, listed and revoked through the
// replicated state, which keeps only their sha256 hashes. The token itself is shown once.
import { randomBytes } from 'node:crypto';
import { ErrorCode, HivemeshError, committedNotAppliedError } from '../protocol/errors.ts';
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

  /** Proposes the command; resolves true once this node applied it, false if it committed but this node lags. */
  private async run(command: Command): Promise<boolean> {
    const result = await this.deps.propose(encodeCommand(command));
    if (result === null) throw new HivemeshError(ErrorCode.internal, `the ${command.type} command produced no result`);
    if (!result.ok) throw refusalToError(result.refusal);
    try {
      await this.deps.waitApplied(result.index);
      return true;
    } catch (error) {
      if (command.type !== 'token.create') throw committedNotAppliedError(`the ${command.type}`, result.index, error);
      return false;
    }
  }

  async create(role: Role, name: string): Promise<TokenView & { token: string }> {
    const token = generateToken();
    const id = `tok_${randomBytes(8).toString('hex')}`;
    const at = Date.now();
    const applied = await this.run({ type: 'token.create', id, name, role, hash: hashToken(token), at });
    // Its secret is shown only now: a node that lags still answers, from the committed command.
    return { ...(applied ? this.view(id) : { id, name, role, createdAt: at, revokedAt: null }), token };
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
