// Peers that disappear half-way must not wedge the relay.
//
// 1. B's control socket closes right after A joins, i.e. while A (a real client) is reacting to
//    its Introduction by opening /connection/A/B/doc. A's pipe now waits for a match that will
//    never come; A even sends into it. Whether the relay holds it, closes it (e.g. with 4408
//    after a pair timeout) or refuses it is its choice (reported in the summary); it must not
//    hang or crash.
// 2. A stale held pipe: D opens /connection/D/C/doc2 and closes it before C's reciprocal arrives.
//    C's pipe must not be "paired" with the dead socket: when D opens a fresh pipe, C and D must
//    be connected through it.
// 3. The relay still introduces and pipes a brand-new pair of clients.
import { Peer, RawControl, RawPipe, compareFrames, connectedPair, exchange, introduce, scenario, sleep, textFrame, uid } from '../lib.mjs'

scenario('vanishing_peer', async ctx => {
  const doc = uid('doc')
  ctx.step('1. B (raw control socket) joins; A (client) joins; B vanishes on its Introduction')
  const b = new RawControl(ctx, uid('b'), ctx.dialect)
  await b.opened()
  b.join(doc)
  await sleep(100)
  const a = new Peer(ctx, ctx.dialect, uid('a'))
  a.join(doc)
  await b.waitIntroduction(a.id, doc)
  b.ws.terminate() // abrupt: no close frame, like a tab being killed
  // a relay may also refuse the pipe outright now that B is gone; then peer-connect never fires
  const held = await a.waitLink(b.peerId, doc, 3000).catch(() => null)
  if (held) {
    held.socket.send('into the void')
    held.socket.send(Buffer.alloc(1000))
    await sleep(500)
  }
  ctx.details.a_pipe_to_vanished_b = !held
    ? 'refused (never opened)'
    : held.inbox.closed
      ? `closed by the relay with code ${held.inbox.closed.code}`
      : 'still open (held)'

  ctx.step('2. a held pipe whose owner vanished must not be paired')
  const [C, D, doc2] = [uid('c'), uid('d'), uid('doc2')]
  await introduce(ctx, C, D, doc2, ctx.dialect)
  const dead = new RawPipe(ctx, D, C, doc2)
  await dead.opened()
  dead.ws.close()
  await dead.inbox.waitClose(5000, "D's first pipe to finish closing")
  await sleep(200) // give the relay time to notice
  const pc = new RawPipe(ctx, C, D, doc2)
  await pc.opened()
  await sleep(300)
  ctx.check(!pc.inbox.closed, `C's pipe was closed (code ${pc.inbox.closed?.code}) although D's fresh pipe had not arrived yet`)
  const pd = new RawPipe(ctx, D, C, doc2)
  await pd.opened()
  pd.send([textFrame('ping')])
  await pc.inbox.waitFrames(1, 5000, "D's ping at C").catch(err => ctx.check(false, `C and D's fresh pipes are not connected: ${err.message}`))
  pc.send([textFrame('pong')])
  await pd.inbox.waitFrames(1, 5000, "C's pong at D").catch(err => ctx.check(false, `C and D's fresh pipes are not connected: ${err.message}`))
  for (const p of compareFrames([textFrame('ping')], await pc.inbox.frames(), 'D→C')) ctx.check(false, p)
  for (const p of compareFrames([textFrame('pong')], await pd.inbox.frames(), 'C→D')) ctx.check(false, p)

  ctx.step('3. a new pair of clients still works')
  const [e, f, le, lf] = await connectedPair(ctx, [ctx.dialect, ctx.dialect], uid('doc3'), ['e', 'f'])
  await exchange(ctx, e, f, le, lf)
  return ctx.details
}, { dialects: ['v3', 'v4'], defaultDialect: 'v3' })
