// Peer ids and document ids that need percent-encoding in the URL path.
//
// Part 1 uses the real clients. They do NOT encode ids: they concatenate them into the URL and
// let the WebSocket URL parser escape what it must (space, non-ASCII, " < > ` { }), leaving
// sub-delimiters (! $ & ' ( ) * + , ; = : @ ~) as they are. So the relay must percent-decode each
// path segment (and must not turn "+" into a space). Ids with "/", "?", "#", "%" or "\" cannot
// pass through these clients unmodified at all, so...
//
// Part 2 uses raw sockets with every segment encoded by encodeURIComponent, and ids that
// contain "/", "%", "%41" (must not be decoded twice), "?", "#", "\", "+" and emoji. The
// Introduction must carry each id exactly as joined.
import { Peer, RawPipe, compareFrames, exchange, introduce, scenario, textFrame, uid } from '../lib.mjs'

scenario('encoded_ids', async ctx => {
  const tag = uid('x').slice(2)
  // what an application could pass to the unmodified clients
  const clientIds = {
    a: `Zoë O'Brien + co (${tag}) ☃ "a" <b> {c} \`d\``,
    b: `bob ${tag} 🎲 !$&*,=:@~`,
    doc: `space racer ${tag} — lobby ✓`,
  }
  ctx.step('client part: two clients with ids the URL parser escapes')
  const a = new Peer(ctx, ctx.dialect, clientIds.a)
  const b = new Peer(ctx, ctx.dialect, clientIds.b)
  a.join(clientIds.doc)
  b.join(clientIds.doc)
  const [la, lb] = await Promise.all([a.waitLink(b.id, clientIds.doc), b.waitLink(a.id, clientIds.doc)])
  await exchange(ctx, a, b, la, lb)

  // ids only an encoding client can use
  const rawIds = {
    A: `alice/${tag} 100% %41 ü?x=1#frag\\+`,
    B: `b%2F${tag}/..//🎲 [x]|^`,
    doc: `doc/${tag}/ä ö %20 #1 ?q`,
  }
  ctx.step('raw part: control sockets and pipes with every segment percent-encoded')
  await introduce(ctx, rawIds.A, rawIds.B, rawIds.doc, ctx.dialect) // checks the ids in both Introductions
  const pa = new RawPipe(ctx, rawIds.A, rawIds.B, rawIds.doc)
  const pb = new RawPipe(ctx, rawIds.B, rawIds.A, rawIds.doc)
  await Promise.all([pa.opened(), pb.opened()])
  pa.send([textFrame('to B')])
  pb.send([textFrame('to A')])
  await Promise.all([pb.inbox.waitFrames(1, 5000, 'raw message A→B'), pa.inbox.waitFrames(1, 5000, 'raw message B→A')])
  for (const p of compareFrames([textFrame('to B')], await pb.inbox.frames(), 'raw A→B')) ctx.check(false, p)
  for (const p of compareFrames([textFrame('to A')], await pa.inbox.frames(), 'raw B→A')) ctx.check(false, p)
  return { clientIds, rawIds, urls: [pa.url, pb.url] }
}, { dialects: ['v3', 'v4'], defaultDialect: 'v3' })
