// A game host and a player meet in a lobby through the relay, as in the seed's example, with the
// published @localfirst/relay-client 3.6.2. Run `make run` in the repository, then here:
//   npm ci && npm start                  (RELAY_URL=ws://host:port npm start for another relay)
//
// Two things Node 20 needs that a browser does not, both handled here: the 3.6.2 package ships
// ESM without file extensions, which Node cannot import, so `npm start` bundles this file with
// esbuild first; and the client uses the global WebSocket, which Node 20 lacks, so `ws` stands in.
import WebSocket from 'ws'
import { Client } from '@localfirst/relay-client'

globalThis.WebSocket = WebSocket

const url = process.env.RELAY_URL ?? 'ws://localhost:8080'
const lobby = process.env.LOBBY ?? 'spaceRacer-lobby'
const suffix = Math.random().toString(36).slice(2, 8) // peer ids must be unique on a relay

const host = new Client({ userName: `host-${suffix}`, url })
const player = new Client({ userName: `playerJoe-${suffix}`, url })

// Each side listens on the pipe the relay gives it, then says something. The short wait lets
// the other side attach its listener first (Node's ws may deliver a frame that arrives with the
// handshake before the 'peer.connect' handler has run).
function play(client, say) {
  return new Promise((resolve) => {
    client.on('peer.connect', ({ userName, socket }) => {
      socket.addEventListener('message', (event) => {
        console.log(`${client.userName} got from ${userName}: ${event.data}`)
        resolve()
      })
      setTimeout(() => socket.send(say), 100)
    })
  })
}

const done = Promise.all([
  play(host, 'welcome to the race'),
  play(player, 'ready: move left'),
])
host.join(lobby) // opens the lobby
player.join(lobby) // joins the same lobby: the relay introduces the two and pipes them

const timeout = setTimeout(() => {
  console.error(`no exchange within 10 s: is the relay running at ${url}?`)
  process.exit(1)
}, 10_000)
await done
clearTimeout(timeout)
host.disconnectServer()
player.disconnectServer()
console.log('done')
process.exit(0)
