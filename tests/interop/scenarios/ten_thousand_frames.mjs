// 10,000 frames each way through one client-to-client pipe, sent as fast as the client can,
// alternating text and binary; every frame carries its sequence number, so any loss,
// duplication, reordering or type change is caught.
import { checkSeqStream, connectedPair, scenario, seqFrame, uid } from '../lib.mjs'

const COUNT = 10000

scenario('ten_thousand_frames', async ctx => {
  const doc = uid('doc')
  ctx.step('two clients connect')
  const [a, b, la, lb] = await connectedPair(ctx, [ctx.dialect, ctx.dialect], doc)

  ctx.step(`sending ${COUNT} frames each way`)
  const started = Date.now()
  for (let i = 0; i < COUNT; i++) {
    la.socket.send(seqFrame(i, 'ab').data)
    lb.socket.send(seqFrame(i, 'ba').data)
  }
  await Promise.all([
    lb.inbox.waitFrames(COUNT, 45000, `${COUNT} frames at B`),
    la.inbox.waitFrames(COUNT, 45000, `${COUNT} frames at A`),
  ]).catch(err => ctx.check(false, err.message))
  const ms = Date.now() - started
  for (const p of checkSeqStream(await lb.inbox.frames(), COUNT, 'ab', `${a.id}→${b.id}`)) ctx.check(false, p)
  for (const p of checkSeqStream(await la.inbox.frames(), COUNT, 'ba', `${b.id}→${a.id}`)) ctx.check(false, p)
  return { frames: COUNT, each_way: true, ms_to_deliver: ms }
}, { dialects: ['v3', 'v4'], defaultDialect: 'v3', timeoutMs: 60000 })
