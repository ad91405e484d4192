// A game host and a player meet in a lobby through the relay with the published
// @localfirst/relay 4.2.2 client (MessagePack control frames). Run `make run` in the repository,
// then here:
//   npm ci && npm start                  (RELAY_URL=ws://host:port npm start for another relay)
//
// `npm start` bundles this file with esbuild first: the 4.2.2 package imports JSON with an
// import assertion, which Node 20 deprecates and Node 22 refuses.
import { Client } from '@localfirst/relay/Client.js'

const url = process.env.RELAY_URL ?? 'ws://localhost:8080'
const lobby = process.env.LOBBY ?? 'spaceRacer-lobby'
const suffix = Math.random().toString(36).slice(2, 8) // peer ids must be unique on a relay

const host = new Client({ peerId: `host-${suffix}`, url })
const player = new Client({ peerId: `playerJoe-${suffix}`, url })

// Each side listens on the pipe the relay gives it, then says something. The short wait lets
// the other side attach its listener first (Node's ws may deliver a frame that arrives with the
// handshake before the 'peer-connect' handler has run).
function play(client, say) {
  return new Promise((resolve) => {
    client.on('peer-connect', ({ peerId, socket }) => {
      socket.addEventListener('message', (event) => {
        console.log(`${client.peerId} got from ${peerId}: ${event.data}`)
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
