#!/usr/bin/env node
// The image's HEALTHCHECK: exit 0 when the daemon's /healthz answers 200, 1 otherwise, printing
// the reason. Node rather than curl/wget, so that the check is the same program in and out of
// the image, and the port comes from the same settings the daemon reads.
import { ConfigError, loadConfig } from './config.js';

const TIMEOUT_MS = 4000;

/** A listener on every address is reached on loopback. */
function probeHost(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

async function check(): Promise<number> {
  let health;
  try {
    health = loadConfig({ requireAccount: false }).settings.health;
  } catch (error) {
    process.stdout.write(`unhealthy: ${error instanceof ConfigError ? error.message : String(error)}\n`);
    return 1;
  }
  if (!health.port) {
    process.stdout.write('unhealthy: the health listener is off (set HEALTH_PORT)\n');
    return 1;
  }
  try {
    const response = await fetch(`http://${probeHost(health.host)}:${health.port}/healthz`, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    const body = await response.text();
    process.stdout.write(`${response.ok ? 'healthy' : 'unhealthy'}: ${body}\n`);
    return response.ok ? 0 : 1;
  } catch (error) {
    process.stdout.write(`unhealthy: no answer on port ${health.port} (${(error as Error).message})\n`);
    return 1;
  }
}

check().then((code) => process.exit(code));
