// The optional HTTP listener: /healthz for Docker and orchestrators, /metrics for Prometheus.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Bridge } from './bridge.js';
import type { Logger } from './log.js';

export interface HealthServer {
  port: number;
  close(): Promise<void>;
}

export async function startHealthServer(bridge: Bridge, listen: { port: number; host: string }, logger: Logger): Promise<HealthServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      const health = bridge.health();
      const body = JSON.stringify({ ...health, cloud: bridge.info.cloud, devices: bridge.info.device_count });
      res.writeHead(health.healthy ? 200 : 503, { 'content-type': 'application/json' }).end(body);
      return;
    }
    if (path === '/metrics') {
      bridge.metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': bridge.metrics.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz or /metrics\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  logger.info(`health and metrics on http://${listen.host}:${port}/healthz and /metrics`);
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // A keep-alive connection of a scraper would otherwise hold the stop for seconds.
        server.closeAllConnections();
      }),
  };
}
