#!/usr/bin/env node
// Entry point of the `hmarex2mqtt` program.
import './v8-flags.js';
import { EXIT_FATAL, main } from './cli.js';

function fatal(error: unknown): never {
  // Only the message: a stack or an error object could carry request details.
  process.stderr.write(`hmarex2mqtt: fatal: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(EXIT_FATAL);
}

process.on('uncaughtException', fatal);
process.on('unhandledRejection', fatal);

main(process.argv.slice(2)).then((code) => process.exit(code), fatal);
