// A minimal model of docs/protocol.md (not the project's server; no Part 2), used only to
// check the scenario scripts themselves: every scenario must pass against it, so a failure
// against the real relay is the relay's, not the harness's. Unlike LF it keeps held frames
// unchanged, answers each peer in its own dialect, ignores malformed control frames and closes a
// replaced control socket with 4409.
//
//   node spec-server.mjs PORT     (0 = any free port; prints {"url": ...} once listening)
//
// Any path prefix before /introduction/ or /connection/ is accepted (like /t/<ticket>).
import http from 'node:http'
import { pack, unpack } from 'msgpackr'
import { WebSocketServer } from 'ws'

const port = Number(process.argv[2] ?? 0)
const peers = new Map() // peerId -> {socket, ids: Set, dialect}
const held = new Map() // `${A}\0${B}\0${doc}` -> {socket, frames: [[data, isBinary]]}

const decodeSegment = s => {
  try {
    return decodeURIComponent(s)
  } catch {
    return null
  }
}

function parseControl(data, isBinary) {
  try {
    const m = isBinary ? unpack(data) : JSON.parse(data.toString('utf8'))
    return m && typeof m === 'object' && !Array.isArray(m) && typeof m.type === 'string' ? m : null
  } catch {
    return null
  }
}

function send(peer, message) {
  if (peer.socket.readyState !== 1) return
  if (peer.dialect === 'v4') peer.socket.send(pack(message))
  else peer.socket.send(JSON.stringify(message))
}

function introduce(peerId, peer, other, otherId, ids) {
  send(peer, peer.dialect === 'v4' ? { type: 'Introduction', peerId: otherId, documentIds: ids } : { type: 'Introduction', userName: otherId, documentIds: ids })
}

function onControl(socket, peerId) {
  const old = peers.get(peerId)
  const me = { socket, ids: new Set(), dialect: 'v3' }
  peers.set(peerId, me)
  if (old) old.socket.close(4409, 'replaced')
  socket.on('message', (data, isBinary) => {
    me.dialect = isBinary ? 'v4' : 'v3'
    const m = parseControl(data, isBinary)
    if (!m || !Array.isArray(m.documentIds) || !m.documentIds.every(x => typeof x === 'string')) return
    if (m.type === 'Leave') for (const id of m.documentIds) me.ids.delete(id)
    if (m.type !== 'Join') return
    for (const id of m.documentIds) me.ids.add(id)
    for (const [otherId, other] of peers) {
      if (otherId === peerId) continue
      const common = [...me.ids].filter(id => other.ids.has(id))
      if (!common.length) continue
      introduce(peerId, me, other, otherId, common)
      introduce(otherId, other, me, peerId, common)
    }
  })
  socket.on('close', () => {
    if (peers.get(peerId) === me) peers.delete(peerId)
  })
}

function onConnection(socket, A, B, doc) {
  const key = `${A}\0${B}\0${doc}`
  const match = held.get(`${B}\0${A}\0${doc}`)
  if (!match) {
    const entry = { socket, frames: [] }
    held.get(key)?.socket.close(4409, 'replaced')
    held.set(key, entry)
    const hold = (data, isBinary) => entry.frames.push([data, isBinary])
    socket.on('message', hold)
    socket.on('close', () => held.get(key) === entry && held.delete(key))
    entry.unhold = () => socket.off('message', hold)
    return
  }
  held.delete(`${B}\0${A}\0${doc}`)
  match.unhold()
  for (const [data, isBinary] of match.frames) socket.send(data, { binary: isBinary })
  for (const [x, y] of [[socket, match.socket], [match.socket, socket]]) {
    x.on('message', (data, isBinary) => y.readyState === 1 && y.send(data, { binary: isBinary }))
    x.on('close', () => y.readyState <= 1 && y.close(1000))
    x.on('error', () => y.terminate())
  }
}

const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024 })
const server = http.createServer((req, res) => res.end('<!doctype html><title>relay</title>up'))
server.on('upgrade', (req, sock, head) => {
  const path = req.url.split('?')[0]
  const intro = /\/introduction\/([^/]+)$/.exec(path)
  const conn = /\/connection\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(path)
  const ids = (intro ?? conn ?? []).slice(1).map(decodeSegment)
  if (!ids.length || ids.includes(null)) return sock.destroy()
  wss.handleUpgrade(req, sock, head, ws => (intro ? onControl(ws, ids[0]) : onConnection(ws, ...ids)))
})
server.listen(port, '127.0.0.1', () =>
  console.log(JSON.stringify({ url: `ws://127.0.0.1:${server.address().port}`, server: 'spec-server (docs/protocol.md model)', pid: process.pid })))
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0))
