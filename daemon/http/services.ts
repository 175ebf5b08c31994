// What the HTTP layer needs from the daemon. Routes see only this interface, so they can
// be tested with app.inject() against a fake, and the daemon stays the one owner of state.
import type { AgentsStatus, ClusterStatus } from '../../protocol/api.ts';
import type { Action, Role } from '../../protocol/tokens.ts';

export type { Action, Role };

export interface Principal {
  tokenId: string;
  name: string;
  role: Role;
}

export type Readiness = { ready: true; leaderId: string } | { ready: false; reason: string };

export interface HttpServices {
  nodeId: string;
  authenticate(token: string): Principal | null;
  /**
   * For a token `authenticate` does not know: catch up with the leader's commit and look
   * again (a token created through another node a moment ago is not applied here yet).
   */
  authenticateAfterCatchUp?(token: string): Promise<Principal | null>;
  can(role: Role, action: Action): boolean;
  readiness(): Readiness;
  clusterStatus(): ClusterStatus;
  agentsStatus(): AgentsStatus;
  reportInternalError(error: unknown, context: string): void;
}
