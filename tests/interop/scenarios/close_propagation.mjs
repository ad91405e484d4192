// When one side of a paired pipe closes, the relay closes the other side (within 5 s here):
// a client closing its pipe cleanly (the other client must emit peer-disconnect), and a raw
// socket dropping its TCP connection without a close frame.
import { RawPipe, connectedPair, introduce, scenario, textFrame, uid } from '../lib.mjs'

const WITHIN_MS = 5000

scenario('close_propagation', async ctx => {
  ctx.step('clean close by a client')
  const doc = uid('doc')
  const [a, b, la] = await connectedPair(ctx, [ctx.dialect, ctx.dialect], doc)
  const t0 = Date.now()
  la.socket.close()
  await b.waitDisconnect(a.id, doc, WITHIN_MS)
  ctx.details.clean = { ms: Date.now() - t0, code_at_other_side: b.link(a.id, doc).inbox.closed?.code }

  ctx.step('abrupt disconnect of a raw pipe (no close frame)')
  const [X, Y, doc2] = [uid('x'), uid('y'), uid('doc2')]
  await introduce(ctx, X, Y, doc2, ctx.dialect)
  const px = new RawPipe(ctx, X, Y, doc2)
  const py = new RawPipe(ctx, Y, X, doc2)
  await Promise.all([px.opened(), py.opened()])
  px.send([textFrame('are you there?')]) // make sure they are paired before pulling the plug
  await py.inbox.waitFrames(1, 5000, 'a frame X→Y before the disconnect')
  const t1 = Date.now()
  px.ws.terminate()
  await py.inbox.waitClose(WITHIN_MS, `Y's pipe to be closed after X dropped`)
  ctx.details.abrupt = { ms: Date.now() - t1, code_at_other_side: py.inbox.closed.code }
  return ctx.details
}, { dialects: ['v3', 'v4'], defaultDialect: 'v3' })
