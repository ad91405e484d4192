// Shared code for the scenario scripts in scenarios/.
//
// Every scenario runs as `node scenarios/<name>.mjs <baseUrl> [--dialect=v3|v4|mixed] [--timeout=ms]`
// and, through `scenario()` below:
//   - prints exactly one JSON line on stdout: {"scenario", "dialect", "ok", "ms", "details", "failures"};
//   - exits 0 on success, 1 on failure (with a readable reason on stderr), 2 on bad usage;
//   - is killed by its own hard timeout, so it never hangs whatever the server does.
// Progress lines go to stderr, so that a failing test shows how far the scenario got.
//
// The dialect names the client generation: "v3" = @localfirst/relay-client@3.6.2 (JSON text
// control frames, `userName`), "v4" = @localfirst/relay@4.2.2 ./Client.js (MessagePack binary
// frames, `peerId`), "mixed" = both in one scenario.

import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { pack, unpack } from 'msgpackr'
import WebSocket from 'ws'
import BrowserLikeWebSocket from './browser-ws.mjs'
import { ClientV3, ClientV4 } from './build/clients.mjs'

// The 3.6.2 client calls the global `WebSocket` (and its static OPEN); Node 20 has none, and
// Node 22's built-in one would behave differently from the one the 4.x client gets.
Object.defineProperty(globalThis, 'WebSocket', { value: BrowserLikeWebSocket, writable: true, configurable: true })

export { ClientV3, ClientV4, WebSocket, pack, unpack, sleep }

// ---------------------------------------------------------------------------------------------
// small utilities

export const sha256 = bytes => createHash('sha256').update(bytes).digest('hex')
export const randomBinary = n => randomBytes(n)

/** A fresh id, so that parallel runs against one server never meet each other. */
export const uid = (prefix = 'id') => `${prefix}-${randomUUID().slice(0, 8)}`

/** Resolves when `predicate()` is true, re-checked whenever `emitter` emits `event`. */
export function until(emitter, event, predicate, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const check = () => {
      let value
      try {
        value = predicate()
      } catch (err) {
        finish()
        reject(err)
        return
      }
      if (value) {
        finish()
        resolve(value)
      }
    }
    const timer = setTimeout(() => {
      finish()
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
    }, timeoutMs)
    const finish = () => {
      clearTimeout(timer)
      emitter.off(event, check)
    }
    emitter.on(event, check)
    check()
  })
}

/** A short, printable rendering of a frame, for failure messages. */
export function show(frame) {
  if (!frame) return String(frame)
  if (frame.text) {
    const s = frame.data.length > 60 ? `${frame.data.slice(0, 60)}…(${frame.data.length} chars)` : frame.data
    return `text ${JSON.stringify(s)}`
  }
  const head = frame.data.subarray(0, 24).toString('hex')
  return `binary[${frame.data.length}] ${head}${frame.data.length > 24 ? '…' : ''}`
}

/**
 * Explains a wrong frame when it is a known relay mistake: LF 4.x MessagePack-encodes the frames
 * it held for a pipe (`send(socket, pack(message))`), LF 3.x JSON-encodes them
 * (`JSON.stringify(Buffer)` = {"type":"Buffer","data":[...]}), and ws ≥ 8 turns text into binary
 * when a relay forwards the Buffer it was handed without the isBinary flag.
 */
export function diagnose(expected, got) {
  try {
    if (!got.text && expected.text && got.data.toString('utf8') === expected.data)
      return ' (same bytes, but the text frame became a binary frame)'
    if (got.text && !expected.text && Buffer.from(got.data, 'utf8').equals(expected.data))
      return ' (same bytes, but the binary frame became a text frame)'
    if (!got.text) {
      const decoded = unpack(got.data)
      const same = expected.text
        ? decoded === expected.data
        : decoded instanceof Uint8Array && Buffer.from(decoded).equals(expected.data)
      if (same) return ' (the relay MessagePack-encoded the frame, as LF 4.x does with held frames)'
    } else {
      const parsed = JSON.parse(got.data)
      if (parsed && parsed.type === 'Buffer' && Array.isArray(parsed.data))
        return ' (the relay JSON-encoded a Buffer, as LF 3.x does with held frames)'
      if (typeof parsed === 'string' && parsed === expected.data) return ' (the relay JSON-encoded the frame)'
    }
  } catch {
    // not one of the known encodings
  }
  return ''
}

/** Compares received frames with expected ones (type, bytes, order); returns problems found. */
export function compareFrames(expected, got, label) {
  const problems = []
  const n = Math.min(expected.length, got.length)
  for (let i = 0; i < n; i++) {
    const e = expected[i]
    const g = got[i]
    const same = e.text === g.text && (e.text ? e.data === g.data : Buffer.from(e.data).equals(g.data))
    if (!same) {
      problems.push(`${label}: frame #${i}: expected ${show(e)}, got ${show(g)}${diagnose(e, g)}`)
      if (problems.length >= 5) break
    }
  }
  if (got.length !== expected.length)
    problems.push(`${label}: expected ${expected.length} frames, got ${got.length}`)
  return problems
}

export const textFrame = s => ({ text: true, data: s })
export const binaryFrame = b => ({ text: false, data: Buffer.from(b) })

/** Sends {text,data} frames on any ws-based socket; ws sends strings as text, buffers as binary. */
export function sendFrames(socket, frames) {
  for (const f of frames) socket.send(f.data)
}

/**
 * Frame `seq` of a numbered stream: even numbers are text, odd numbers binary, so that a stream
 * also proves frame types survive. The sequence number is in every frame.
 */
export function seqFrame(seq, tag = '') {
  if (seq % 2 === 0) return textFrame(`${tag}#${seq}`)
  const b = Buffer.alloc(8 + Buffer.byteLength(tag))
  b.writeUInt32BE(0x5e9f4a3e, 0)
  b.writeUInt32BE(seq, 4)
  b.write(tag, 8)
  return binaryFrame(b)
}

/** Checks a received numbered stream; returns a list of problems (empty when intact). */
export function checkSeqStream(frames, count, tag, label) {
  const problems = []
  for (let i = 0; i < frames.length && problems.length < 5; i++) {
    const f = frames[i]
    let seq = NaN
    if (f.text) {
      const m = /^(.*)#(\d+)$/.exec(f.data)
      if (m && m[1] === tag) seq = Number(m[2])
    } else if (f.data.length >= 8 && f.data.readUInt32BE(0) === 0x5e9f4a3e && f.data.subarray(8).toString() === tag) {
      seq = f.data.readUInt32BE(4)
    }
    if (Number.isNaN(seq)) problems.push(`${label}: frame #${i} is not part of the stream: ${show(f)}`)
    else if (seq !== i) problems.push(`${label}: frame #${i} carries sequence number ${seq} (lost or reordered frames)`)
    else if (f.text !== (i % 2 === 0)) problems.push(`${label}: frame #${i} arrived as ${f.text ? 'text' : 'binary'}`)
  }
  if (frames.length !== count) problems.push(`${label}: expected ${count} frames, got ${frames.length}`)
  return problems
}

// ---------------------------------------------------------------------------------------------
// Inbox: everything a socket receives, in order, plus how it closed.

/** Normalises what a WebSocket message event carries into {text, data: string | Buffer}. */
async function normalise(data) {
  if (typeof data === 'string') return textFrame(data)
  if (Buffer.isBuffer(data)) return { text: false, data }
  if (data instanceof ArrayBuffer) return { text: false, data: Buffer.from(data) }
  if (ArrayBuffer.isView(data)) return { text: false, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) }
  if (typeof Blob !== 'undefined' && data instanceof Blob) return { text: false, data: Buffer.from(await data.arrayBuffer()) }
  if (Array.isArray(data)) return { text: false, data: Buffer.concat(data) }
  throw new Error(`unexpected message data type ${Object.prototype.toString.call(data)}`)
}

export class Inbox extends EventEmitter {
  /** Must be attached synchronously where the socket is obtained, so no frame can be missed. */
  constructor(socket) {
    super()
    this.socket = socket
    this.raw = [] // event.data values, in arrival order (Blobs are converted lazily, in order)
    this.closed = null // {code, reason, at}
    this.opened = socket.readyState === WebSocket.OPEN
    socket.addEventListener('message', ev => {
      this.raw.push(ev.data)
      this.emit('change')
    })
    socket.addEventListener('open', () => {
      this.opened = true
      this.emit('change')
    })
    socket.addEventListener('close', ev => {
      this.closed = { code: ev.code, reason: String(ev.reason ?? ''), at: Date.now() }
      this.emit('change')
    })
    socket.addEventListener('error', ev => {
      this.error = ev.message || String(ev.error ?? ev)
      this.emit('change')
    })
  }

  get count() {
    return this.raw.length
  }

  async frames() {
    const out = []
    for (const d of this.raw) out.push(await normalise(d))
    return out
  }

  waitOpen(timeoutMs = 5000, what = 'the socket to open') {
    return until(this, 'change', () => {
      if (this.opened) return true
      if (this.closed) throw new Error(`${what}: closed before opening (code ${this.closed.code}${this.error ? `, ${this.error}` : ''})`)
      return false
    }, timeoutMs, what)
  }

  waitFrames(n, timeoutMs, what = `${n} frame(s)`) {
    return until(this, 'change', () => this.raw.length >= n, timeoutMs, `${what} (have ${this.raw.length})`)
  }

  waitClose(timeoutMs, what = 'the socket to be closed') {
    return until(this, 'change', () => this.closed, timeoutMs, what)
  }
}

// ---------------------------------------------------------------------------------------------
// Control-frame dialects (what a raw socket sends and expects on /introduction/<peerId>)

export const PEER_KEY = { v3: 'userName', v4: 'peerId' }

/** Encodes a control message the way the given client generation does. */
export function encodeControl(dialect, message) {
  if (dialect === 'v3') return JSON.stringify(message) // a string: ws sends a text frame
  if (dialect === 'v4') return pack(message) // a Buffer: ws sends a binary frame
  throw new Error(`unknown dialect ${dialect}`)
}

/**
 * Decodes a server→client control frame strictly, the way the given client generation would
 * read it, and returns {message} or {problem}. Both clients throw on anything but an
 * Introduction, so anything else is a problem here too.
 */
export function decodeControl(dialect, frame) {
  let message
  if (dialect === 'v3') {
    if (!frame.text) return { problem: `binary frame (a browser 3.x client reads a Blob and cannot parse it): ${show(frame)}` }
    try {
      message = JSON.parse(frame.data)
    } catch {
      return { problem: `not JSON: ${show(frame)}` }
    }
  } else {
    if (frame.text) return { problem: `text frame (the 4.x client decodes MessagePack from binary frames): ${show(frame)}` }
    try {
      message = unpack(frame.data)
    } catch {
      return { problem: `not MessagePack: ${show(frame)}` }
    }
  }
  if (!message || message.type !== 'Introduction')
    return { message, problem: `not an Introduction (the ${dialect} client throws on it): ${JSON.stringify(message)}` }
  const keys = Object.keys(message).sort().join(',')
  const want = ['documentIds', 'type', PEER_KEY[dialect]].sort().join(',')
  if (keys !== want) return { message, problem: `Introduction keys are {${keys}}, expected {${want}}: ${JSON.stringify(message)}` }
  if (typeof message[PEER_KEY[dialect]] !== 'string' || !Array.isArray(message.documentIds))
    return { message, problem: `Introduction field types are wrong: ${JSON.stringify(message)}` }
  return { message }
}

// ---------------------------------------------------------------------------------------------
// Raw sockets, for what the client API cannot express.

const segment = s => encodeURIComponent(s)

/** A control socket opened by hand, speaking one dialect. */
export class RawControl {
  constructor(ctx, peerId, dialect) {
    this.ctx = ctx
    this.peerId = peerId
    this.dialect = dialect
    this.url = `${ctx.baseUrl}/introduction/${segment(peerId)}`
    this.ws = new WebSocket(this.url)
    this.inbox = new Inbox(this.ws)
    this.reported = new Set() // indices of bad frames already reported
    ctx.onCleanup(() => this.ws.close())
  }

  opened(timeoutMs = 5000) {
    return this.inbox.waitOpen(timeoutMs, `control socket of ${JSON.stringify(this.peerId)} to open`)
  }

  send(message) {
    this.ws.send(encodeControl(this.dialect, message))
  }

  /** Sends a frame as is: a string goes as text, a Buffer as binary. */
  sendRaw(data) {
    this.ws.send(data)
  }

  join(...documentIds) {
    this.send({ type: 'Join', documentIds })
  }

  leave(...documentIds) {
    this.send({ type: 'Leave', documentIds })
  }

  /** All frames received so far, decoded strictly; protocol problems are reported through ctx. */
  async introductions() {
    const out = []
    const frames = await this.inbox.frames()
    frames.forEach((frame, i) => {
      const { message, problem } = decodeControl(this.dialect, frame)
      if (!problem) out.push({ peerId: message[PEER_KEY[this.dialect]], documentIds: message.documentIds })
      else if (!this.reported.has(i)) {
        this.reported.add(i)
        this.ctx.check(false, `control socket of ${JSON.stringify(this.peerId)} (${this.dialect}), frame #${i}: ${problem}`)
      }
    })
    return out
  }

  /** Waits for an Introduction to `peerId` that lists `documentId`. */
  async waitIntroduction(peerId, documentId, timeoutMs = 5000) {
    const what = `${JSON.stringify(this.peerId)} to be introduced to ${JSON.stringify(peerId)} on ${JSON.stringify(documentId)}`
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const intros = await this.introductions()
      const found = intros.find(x => x.peerId === peerId && x.documentIds.includes(documentId))
      if (found) return found
      if (this.inbox.closed) throw new Error(`${what}: control socket closed (code ${this.inbox.closed.code})`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${JSON.stringify(intros)}`)
      const before = this.inbox.count
      await until(this.inbox, 'change', () => this.inbox.count > before || this.inbox.closed, left, what).catch(() => {})
    }
  }

  close() {
    this.ws.close()
  }
}

/** A pipe socket `/connection/<A>/<B>/<documentId>` opened by hand (ids percent-encoded). */
export class RawPipe {
  constructor(ctx, A, B, documentId) {
    this.label = `pipe ${A}→${B}`
    this.url = `${ctx.baseUrl}/connection/${segment(A)}/${segment(B)}/${segment(documentId)}`
    this.ws = new WebSocket(this.url)
    this.inbox = new Inbox(this.ws)
    ctx.onCleanup(() => this.ws.close())
  }

  opened(timeoutMs = 5000) {
    return this.inbox.waitOpen(timeoutMs, `${this.label} to open`)
  }

  send(frames) {
    sendFrames(this.ws, frames)
  }
}

/** Two raw control sockets that have joined `documentId` and been introduced to each other. */
export async function introduce(ctx, A, B, documentId, dialect) {
  const a = new RawControl(ctx, A, dialect)
  const b = new RawControl(ctx, B, dialect)
  await Promise.all([a.opened(), b.opened()])
  a.join(documentId)
  b.join(documentId)
  await Promise.all([a.waitIntroduction(B, documentId), b.waitIntroduction(A, documentId)])
  return [a, b]
}

// ---------------------------------------------------------------------------------------------
// Peer: one real npm client (3.x or 4.x) plus bookkeeping of the pipes it gets.

export class Peer extends EventEmitter {
  constructor(ctx, dialect, id) {
    super()
    this.ctx = ctx
    this.dialect = dialect
    this.id = id
    this.links = new Map() // `${remote}\0${documentId}` -> {remote, documentId, socket, inbox, disconnected}
    this.client =
      dialect === 'v3' ? new ClientV3({ userName: id, url: ctx.baseUrl }) : new ClientV4({ peerId: id, url: ctx.baseUrl })
    const [connect, disconnect] = dialect === 'v3' ? ['peer.connect', 'peer.disconnect'] : ['peer-connect', 'peer-disconnect']
    this.client.on(connect, payload => {
      const remote = dialect === 'v3' ? payload.userName : payload.peerId
      // attach right here, as an application would
      const link = { remote, documentId: payload.documentId, socket: payload.socket, inbox: new Inbox(payload.socket) }
      this.links.set(`${remote}\0${payload.documentId}`, link)
      this.emit('change')
    })
    this.client.on(disconnect, payload => {
      const remote = dialect === 'v3' ? payload.userName : payload.peerId
      const link = this.links.get(`${remote}\0${payload.documentId}`)
      if (link && link.socket === payload.socket) link.disconnected = Date.now()
      this.emit('change')
    })
    this.client.on('error', err => ctx.log(`${dialect} client ${id}: error event: ${err?.message ?? err}`))
    ctx.onCleanup(() => this.client.disconnectServer())
  }

  join(documentId) {
    this.client.join(documentId)
    return this
  }

  leave(documentId) {
    this.client.leave(documentId)
    return this
  }

  link(remote, documentId) {
    return this.links.get(`${remote}\0${documentId}`)
  }

  /** Waits for this client's `peer-connect` (3.x: `peer.connect`) for `remote` on `documentId`. */
  async waitLink(remote, documentId, timeoutMs = 10000) {
    try {
      return await until(this, 'change', () => this.link(remote, documentId), timeoutMs,
        `${this.dialect} client ${JSON.stringify(this.id)} to get a pipe to ${JSON.stringify(remote)} on ${JSON.stringify(documentId)}`)
    } catch (err) {
      // what it got instead usually tells the story (e.g. a peer id mangled by the relay)
      const got = [...this.links.values()].map(l => `${JSON.stringify(l.remote)} on ${JSON.stringify(l.documentId)}`)
      throw new Error(`${err.message}; its pipes: ${got.length ? got.join(', ') : 'none'}`)
    }
  }

  waitDisconnect(remote, documentId, timeoutMs) {
    return until(this, 'change', () => this.link(remote, documentId)?.disconnected, timeoutMs,
      `${this.dialect} client ${JSON.stringify(this.id)} to get peer-disconnect for ${JSON.stringify(remote)}`)
  }

  close() {
    this.client.disconnectServer()
  }
}

/** The dialect of the i-th peer of a scenario: all the same, or alternating when "mixed". */
export const dialectOf = (dialect, i) => (dialect === 'mixed' ? (i % 2 === 0 ? 'v3' : 'v4') : dialect)

/** Two client peers that joined one document and both got their pipe; returns [a, b, linkA, linkB]. */
export async function connectedPair(ctx, dialects, documentId, names = ['a', 'b']) {
  const a = new Peer(ctx, dialects[0], uid(names[0]))
  const b = new Peer(ctx, dialects[1], uid(names[1]))
  a.join(documentId)
  b.join(documentId)
  const [la, lb] = await Promise.all([a.waitLink(b.id, documentId), b.waitLink(a.id, documentId)])
  return [a, b, la, lb]
}

/** Sends one text frame each way over a connected pair and checks both arrive intact. */
export async function exchange(ctx, a, b, la, lb, label = '') {
  const ab = textFrame(`hello ${b.id} from ${a.id} ${label}`.trim())
  const ba = textFrame(`hello ${a.id} from ${b.id} ${label}`.trim())
  const nb = lb.inbox.count
  const na = la.inbox.count
  la.socket.send(ab.data)
  lb.socket.send(ba.data)
  await Promise.all([lb.inbox.waitFrames(nb + 1, 5000, `message ${a.id}→${b.id}`), la.inbox.waitFrames(na + 1, 5000, `message ${b.id}→${a.id}`)])
  const gotB = (await lb.inbox.frames()).slice(nb, nb + 1)
  const gotA = (await la.inbox.frames()).slice(na, na + 1)
  for (const p of compareFrames([ab], gotB, `${a.id}→${b.id}`)) ctx.check(false, p)
  for (const p of compareFrames([ba], gotA, `${b.id}→${a.id}`)) ctx.check(false, p)
}

// ---------------------------------------------------------------------------------------------
// The scenario runner

function parseArgs(argv) {
  const positional = argv.filter(a => !a.startsWith('--'))
  const flags = Object.fromEntries(argv.filter(a => a.startsWith('--')).map(a => {
    const [k, ...v] = a.slice(2).split('=')
    return [k, v.join('=')]
  }))
  return { baseUrl: positional[0], flags }
}

/**
 * Runs one scenario. `body(ctx)` does the work and returns details for the summary; a thrown
 * error fails the scenario at once, `ctx.check(false, msg)` records a failure and carries on
 * (so that one run reports every broken expectation it can).
 */
export function scenario(name, body, { dialects = null, defaultDialect = null, timeoutMs = 30000 } = {}) {
  const started = Date.now()
  const { baseUrl, flags } = parseArgs(process.argv.slice(2))
  const dialect = flags.dialect || defaultDialect
  const usage = `usage: node ${process.argv[1]} <baseUrl e.g. ws://127.0.0.1:8000>${dialects ? ` [--dialect=${dialects.join('|')}]` : ''} [--timeout=ms]`
  if (!baseUrl || !/^wss?:\/\/[^/]/.test(baseUrl)) {
    console.error(usage)
    process.exit(2)
  }
  if (dialects && !dialects.includes(dialect)) {
    console.error(`unknown dialect ${JSON.stringify(dialect)}; ${usage}`)
    process.exit(2)
  }
  const hardTimeout = Number(flags.timeout) || timeoutMs

  const cleanups = []
  const failures = []
  let currentStep = 'start'
  let done = false

  const log = msg => process.stderr.write(`[${name}${dialect ? `:${dialect}` : ''} +${Date.now() - started}ms] ${msg}\n`)
  const ctx = {
    // the clients append "/introduction/..." themselves, so a trailing slash would double up
    baseUrl: baseUrl.replace(/\/+$/, ''),
    // another worker of the same relay (--second=<url>), for scenarios across workers
    secondUrl: (flags.second || baseUrl).replace(/\/+$/, ''),
    dialect,
    details: {},
    log,
    step(label) {
      currentStep = label
      log(label)
    },
    check(condition, message) {
      if (!condition) {
        failures.push(message)
        log(`CHECK FAILED: ${message}`)
      }
      return condition
    },
    onCleanup(fn) {
      cleanups.push(fn)
    },
  }

  const finish = async (error, details) => {
    if (done) return
    done = true
    const ok = !error && failures.length === 0
    const all = error ? [...failures, error] : failures
    const summary = { scenario: name, dialect: dialect ?? null, ok, ms: Date.now() - started, details: details ?? ctx.details, failures: all }
    process.stdout.write(`${JSON.stringify(summary)}\n`)
    if (!ok) process.stderr.write(`FAIL ${name}${dialect ? ` [${dialect}]` : ''} at step "${currentStep}":\n  - ${all.join('\n  - ')}\n`)
    // leave the server tidy (parallel runs share it), but never wait long for that
    for (const fn of cleanups.reverse()) {
      try {
        fn()
      } catch {
        // already closed
      }
    }
    await sleep(100)
    process.exit(ok ? 0 : 1)
  }

  // deliberately not unref'd: it also keeps Node from exiting silently if the body awaits forever
  setTimeout(() => finish(`hard timeout: scenario did not finish within ${hardTimeout} ms`), hardTimeout)
  process.on('uncaughtException', err => finish(`uncaught exception (a client throws e.g. on a message type it does not know): ${err?.stack ?? err}`))
  process.on('unhandledRejection', err => finish(`unhandled rejection: ${err?.stack ?? err}`))

  ctx.step(`base url ${ctx.baseUrl}`)
  Promise.resolve()
    .then(() => body(ctx))
    .then(details => finish(null, details ?? ctx.details), err => finish(err?.message ?? String(err)))
}

// ---------------------------------------------------------------------------------------------
// The seed's example, shared by hello_v3 / hello_v4 / mixed_v3_v4.

/**
 * Two clients join one lobby and greet each other from inside their peer-connect handler,
 * written the way an application (the seed) writes it with each client's own API. Sending at
 * once from peer-connect means the first of the two pipes is still held by the relay, so one of
 * the two greetings always travels as a held frame.
 */
export async function seedHello(ctx, dialects, urls = [ctx.baseUrl, ctx.baseUrl]) {
  // The seed uses the fixed id 'spaceRacer-lobby'; a random suffix keeps parallel runs apart.
  const lobby = uid('spaceRacer-lobby')
  const names = [uid('alice'), uid('bob')]
  const greeting = (to, from) => `hello ${to}, this is ${from}`
  const seen = new EventEmitter()
  const connected = {}
  const received = {}

  names.forEach((me, i) => {
    const dialect = dialects[i]
    received[me] = []
    if (dialect === 'v3') {
      const client = new ClientV3({ userName: me, url: urls[i] })
      ctx.onCleanup(() => client.disconnectServer())
      client.on('peer.connect', ({ userName, documentId, socket }) => {
        connected[me] = { other: userName, documentId }
        socket.send(greeting(userName, me))
        socket.onmessage = e => {
          received[me].push(e.data)
          seen.emit('change')
        }
        seen.emit('change')
      })
      client.join(lobby)
    } else {
      const client = new ClientV4({ peerId: me, url: urls[i] })
      ctx.onCleanup(() => client.disconnectServer())
      client.on('peer-connect', ({ peerId, documentId, socket }) => {
        connected[me] = { other: peerId, documentId }
        socket.send(greeting(peerId, me))
        socket.addEventListener('message', e => {
          received[me].push(e.data)
          seen.emit('change')
        })
        seen.emit('change')
      })
      client.join(lobby)
    }
  })

  ctx.step(`${names[0]} (${dialects[0]}) and ${names[1]} (${dialects[1]}) join ${lobby}`)
  await until(seen, 'change', () => connected[names[0]] && connected[names[1]], 10000,
    `both clients to emit peer-connect (got: ${Object.keys(connected).join(', ') || 'none'})`)
  for (const [me, other] of [names, [...names].reverse()]) {
    ctx.check(connected[me].other === other && connected[me].documentId === lobby,
      `${me} got peer-connect for ${JSON.stringify(connected[me])}, expected ${other} on ${lobby}`)
  }

  ctx.step('waiting for the greeting in each direction')
  await until(seen, 'change', () => received[names[0]].length && received[names[1]].length, 10000,
    `a message in each direction (${names[0]} has ${received[names[0]].length}, ${names[1]} has ${received[names[1]].length})`)
  await sleep(200) // anything extra (duplicates) would show up here
  for (const [me, other] of [names, [...names].reverse()]) {
    const frames = []
    for (const d of received[me]) frames.push(await normalise(d))
    for (const p of compareFrames([textFrame(greeting(me, other))], frames, `${other}→${me}`)) ctx.check(false, p)
  }
  return { lobby, peers: names, dialects }
}
