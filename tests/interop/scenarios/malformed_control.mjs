// Malformed control frames are ignored: the control socket stays open, nothing is sent back
// (the 3.x/4.x clients throw on any message but an Introduction), no id is joined by accident,
// and a valid Join afterwards still works.
//
// Every malformed message is sent both as JSON text and as MessagePack binary. Ids in them are
// "trap" ids: a peer T joins those afterwards and must not meet M, which catches a relay that
// e.g. treats {"documentIds": "trap"} as a one-element list (LF 4.2.2 does).
//
// Known to crash LF (the process dies): 4.2.2 on MessagePack nil and on a Leave whose
// documentIds is not an array; 3.6.2 on the JSON text `null`.
import { RawControl, encodeControl, pack, scenario, sleep, uid } from '../lib.mjs'

scenario('malformed_control', async ctx => {
  const [doc, decoy, trap] = [uid('doc'), uid('decoy'), uid('trap')]
  const m = new RawControl(ctx, uid('m'), ctx.dialect)
  await m.opened()
  m.join(decoy) // so that the bad Leave messages below hit a peer that has ids

  const messages = [
    ['unknown type', { type: 'Bogus', documentIds: [trap] }],
    ['type is a number', { type: 42, documentIds: [trap] }],
    ['no type', { documentIds: [trap] }],
    ['null', null],
    ['an array', ['Join', [trap]]],
    ['a number', 5],
    ['a string', 'Join'],
    ['Join, documentIds a string', { type: 'Join', documentIds: trap }],
    ['Join, documentIds an object', { type: 'Join', documentIds: { 0: trap } }],
    ['Join, documentIds missing', { type: 'Join' }],
    ['Join, ids not strings', { type: 'Join', documentIds: [1, null, { id: trap }, [trap]] }],
    ['Leave, documentIds a number', { type: 'Leave', documentIds: 5 }],
    ['Leave, documentIds missing', { type: 'Leave' }],
    ['Leave, documentIds null', { type: 'Leave', documentIds: null }],
    ['Heartbeat (valid, no answer)', { type: 'Heartbeat' }],
    ['❤️ heartbeat (valid, no answer)', { type: '❤️' }],
  ]
  const frames = [
    ['bad JSON', '{not json'],
    ['JSON with trailing garbage', '{"type":"Join","documentIds":["' + trap + '"]} x'],
    ['empty text frame', ''],
    ['empty binary frame', Buffer.alloc(0)],
    ['garbage binary', Buffer.from([0xc1, 0xff, 0x00, 0x13, 0x37])],
    ['truncated MessagePack', pack({ type: 'Join', documentIds: [trap] }).subarray(0, 12)],
    ...messages.flatMap(([name, msg]) => [[`${name} (JSON)`, JSON.stringify(msg)], [`${name} (MessagePack)`, pack(msg)]]),
  ]
  ctx.step(`sending ${frames.length} malformed or odd frames`)
  for (const [, data] of frames) {
    m.sendRaw(data)
    await sleep(30) // a trickle, not a flood: a relay's rate limiter (Part 2) is not under test
  }
  await sleep(300)
  ctx.check(!m.inbox.closed, `the control socket was closed (code ${m.inbox.closed?.code}) after malformed frames`)

  ctx.step('a valid Join, then peer P joins the same document')
  m.sendRaw(encodeControl(ctx.dialect, { type: 'Join', documentIds: [doc] }))
  const p = new RawControl(ctx, uid('p'), ctx.dialect)
  await p.opened()
  p.join(doc)
  await Promise.all([m.waitIntroduction(p.peerId, doc), p.waitIntroduction(m.peerId, doc)])

  ctx.step('peer T joins the trap id; nobody may meet it')
  const t = new RawControl(ctx, uid('t'), ctx.dialect)
  await t.opened()
  t.join(trap)
  await sleep(700)
  const intros = await m.introductions() // also reports any frame that is not a valid Introduction
  ctx.check(!intros.some(x => x.peerId === t.peerId), `M was introduced to T on ${JSON.stringify(intros.filter(x => x.peerId === t.peerId))}: a malformed message joined an id`)
  ctx.check(t.inbox.count === 0, 'T got an Introduction for the trap id: a malformed message joined an id')
  ctx.check(!m.inbox.closed, `the control socket was closed (code ${m.inbox.closed?.code})`)
  return { malformed_frames: frames.length, introductions_to_m: intros }
}, { dialects: ['v3', 'v4'], defaultDialect: 'v3' })
