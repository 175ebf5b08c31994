// Health and status routes: /health/live, /health/ready, /api/status/cluster,
// /api/status/agents (ARCHITECTURE.md).
import { AgentsStatus, ClusterStatus, ErrorBody, HealthLive, HealthReady } from '../../../protocol/api.ts';
import { ErrorCode, HivemeshError } from '../../../protocol/errors.ts';
import type { App } from '../app.ts';
import type { HttpServices } from '../services.ts';

export function statusRoutes(services: HttpServices) {
  return async (app: App) => {
    app.get('/health/live', { schema: { response: { 200: HealthLive } } }, async () => ({ status: 'live' as const, nodeId: services.nodeId }));

    app.get('/health/ready', { schema: { response: { 200: HealthReady, 503: ErrorBody } } }, async () => {
      const readiness = services.readiness();
      if (!readiness.ready) throw new HivemeshError(ErrorCode.noLeader, `not ready: ${readiness.reason}`, { retryAfterSeconds: 1 });
      return { status: 'ready' as const, nodeId: services.nodeId, leaderId: readiness.leaderId };
    });

    app.get('/api/status/cluster', { config: { action: 'read' }, schema: { response: { 200: ClusterStatus } } }, async () => services.clusterStatus());

    app.get('/api/status/agents', { config: { action: 'read' }, schema: { response: { 200: AgentsStatus } } }, async () => services.agentsStatus());
  };
}
