// A single 1 MiB binary frame each way through a client-to-client pipe arrives whole, as one
// binary frame, byte for byte (compared by SHA-256).
import { connectedPair, randomBinary, scenario, sha256, show, uid } from '../lib.mjs'

const SIZE = 1024 * 1024

scenario('big_frame', async ctx => {
  const doc = uid('doc')
  ctx.step('two clients connect')
  const [a, b, la, lb] = await connectedPair(ctx, [ctx.dialect, ctx.dialect], doc)

  const ab = randomBinary(SIZE)
  const ba = randomBinary(SIZE)
  ctx.step('sending 1 MiB each way')
  la.socket.send(ab)
  lb.socket.send(ba)
  await Promise.all([
    lb.inbox.waitFrames(1, 15000, `the 1 MiB frame at ${b.id}`),
    la.inbox.waitFrames(1, 15000, `the 1 MiB frame at ${a.id}`),
  ])
  for (const [label, sent, inbox] of [[`${a.id}→${b.id}`, ab, lb.inbox], [`${b.id}→${a.id}`, ba, la.inbox]]) {
    const frames = await inbox.frames()
    ctx.check(frames.length === 1, `${label}: expected 1 frame, got ${frames.length}`)
    const [f] = frames
    ctx.check(!f.text, `${label}: arrived as a text frame`)
    ctx.check(!f.text && f.data.length === SIZE && sha256(f.data) === sha256(sent),
      `${label}: content differs (sent ${SIZE} bytes sha256 ${sha256(sent).slice(0, 16)}…, got ${show(f)})`)
  }
  if (la.inbox.closed || lb.inbox.closed) ctx.check(false, `a pipe was closed (codes ${la.inbox.closed?.code} / ${lb.inbox.closed?.code})`)
  return { bytes: SIZE, sha256_ab: sha256(ab) }
}, { dialects: ['v3', 'v4'], defaultDialect: 'v3' })
