// V8 settings for a small, long-running daemon. main.ts imports this module first, before any
// module that could compile WebAssembly.
import { setFlagsFromString } from 'node:v8';

// undici parses HTTP with a WebAssembly module, which V8 recompiles with its optimising compiler
// in the background after the first request: some 30 MB of extra peak RSS (npm run bench) for a
// parser that reads a few pages every ten minutes. The baseline compiler's code serves as well.
setFlagsFromString('--liftoff-only');
