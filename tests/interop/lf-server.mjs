// Reference server: the open-source Local First Relay, unmodified.
//
//   node lf-server.mjs PORT          # @localfirst/relay@4.2.2 (MessagePack; speaks to 4.x clients)
//   node lf-server.mjs PORT --v3     # @localfirst/relay@3.6.2 (JSON; speaks to 3.x clients)
//
// PORT 0 picks a free port. Once listening, prints one JSON line:
//   {"url":"ws://127.0.0.1:PORT","server":"@localfirst/relay@4.2.2","pid":...}
// Needs `npm ci && npm run build` first (4.2.2 is loaded from build/, see build.mjs).
import http from 'node:http'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const [portArg, ...flags] = process.argv.slice(2)
const port = Number(portArg)
if (portArg === undefined || !Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node lf-server.mjs PORT [--v3]')
  process.exit(2)
}
const v3 = flags.includes('--v3')

// LF's listen() has no host option and would bind every interface; keep it on loopback. Patching
// http.Server.listen also hands us the server object, so PORT 0 can report the port it got.
let httpServer
const originalListen = http.Server.prototype.listen
http.Server.prototype.listen = function (...args) {
  httpServer = this
  if (typeof args[0] === 'number' && typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1')
  return originalListen.apply(this, args)
}

let Server
let version
if (v3) {
  // 3.6.2 is CommonJS and installs under an npm alias (see package.json)
  const require = createRequire(import.meta.url)
  ;({ Server } = require('lf-relay-v3'))
  version = require('lf-relay-v3/package.json').version
} else {
  try {
    ;({ Server } = await import('./build/lf-server-4.mjs'))
  } catch (err) {
    console.error(`cannot load build/lf-server-4.mjs (run \`npm ci && npm run build\`): ${err.message}`)
    process.exit(2)
  }
  // (its package.json is not in its "exports", so read it from disk)
  const pkgUrl = new URL('./node_modules/@localfirst/relay/package.json', import.meta.url)
  version = JSON.parse(readFileSync(pkgUrl, 'utf8')).version
}

const server = new Server({ port })
await server.listen({ silent: true })
const actualPort = httpServer.address().port
console.log(
  JSON.stringify({ url: `ws://127.0.0.1:${actualPort}`, server: `@localfirst/relay@${version}`, pid: process.pid }),
)

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0))
