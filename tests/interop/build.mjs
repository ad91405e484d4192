// `npm run build`: bundle what Node cannot import as shipped.
//
// - @localfirst/relay-client@3.6.2 ships TypeScript's ESM output with extension-less relative
//   imports ("./Client") and a bare `import pkg from '../package.json'`; Node's ESM loader rejects
//   both. esbuild resolves them. Its `cuid@2`/`eventemitter3@4` (nested in its own node_modules)
//   are bundled too, so the newer copies hoisted for 4.2.2 cannot shadow them.
// - @localfirst/relay@4.2.2 (./Client.js and ./Server.js) uses `import ... assert { type: "json" }`,
//   deprecated in Node 20 and removed in Node 22. Bundling inlines the JSON.
//
// `ws` and `msgpackr` stay external so that the clients, the scenario scripts (lib.mjs) and the
// reference server share one copy. CommonJS dependencies that do get bundled (debug, cuid) call
// require() for Node built-ins, hence the createRequire banner.
import * as esbuild from 'esbuild'
import { fileURLToPath } from 'node:url'
import { dirname } from 'node:path'

const here = dirname(fileURLToPath(import.meta.url))
const common = {
  absWorkingDir: here,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node18',
  logLevel: 'warning',
  banner: {
    js: "import { createRequire as __interopCreateRequire } from 'node:module'; const require = __interopCreateRequire(import.meta.url);",
  },
}

await esbuild.build({
  ...common,
  entryPoints: ['clients-entry.mjs'],
  outfile: 'build/clients.mjs',
  // see browser-ws.mjs for why the 4.x client gets this instead of plain ws
  alias: { 'isomorphic-ws': './browser-ws.mjs' },
  external: ['ws', 'msgpackr'],
})

// The LF 4.2.2 reference server (used by lf-server.mjs only). All its dependencies stay external.
await esbuild.build({
  ...common,
  entryPoints: ['node_modules/@localfirst/relay/dist/Server.js'],
  outfile: 'build/lf-server-4.mjs',
  packages: 'external',
})

console.log('built build/clients.mjs and build/lf-server-4.mjs')
