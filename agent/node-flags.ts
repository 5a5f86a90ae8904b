// V8 flags for the Node.js that runs `gpumesh-agent`. The agent's idle memory
// is a budget (≤ 100 MB RSS, README "Performance"); V8's defaults are sized for
// throughput instead:
//   --optimize-for-size, --max-semi-space-size=2  V8's low-memory heap sizing: no
//     16-32 MB new space grown during start-up, less slack in the old space
//     that an idle daemon never gives back (the live heap is about 20 MB).
//   --no-maglev  no mid-tier compiler (Node 22+): its code and the pages of the
//     node binary it touches cost about 2.5 MB; hot code still gets TurboFan.
// Measured at no cost in idle CPU. V8 reads them only at start-up
// (v8.setFlagsFromString is too late), so they are on the command line:
// install.sh writes them into the gpumesh-agent wrapper (test/bundle.test.ts
// checks that it matches), and tests and benches that start the daemon pass them.
export const AGENT_NODE_FLAGS: readonly string[] = ['--optimize-for-size', '--max-semi-space-size=2', '--no-maglev']
