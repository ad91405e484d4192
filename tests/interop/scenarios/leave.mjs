// Leave stops introductions: A and B share a document, A leaves it, then C joins it. C must be
// introduced to B but not to A (a client opens a pipe for any Introduction it gets, so an
// introduction would show up as a pipe on A's or C's side).
import { Peer, exchange, scenario, sleep, uid } from '../lib.mjs'

scenario('leave', async ctx => {
  const doc = uid('doc')
  const fence = uid('fence')
  const [a, b, c, h] = ['a', 'b', 'c', 'h'].map(n => new Peer(ctx, ctx.dialect, uid(n)))

  ctx.step('A and B join and connect')
  a.join(doc)
  b.join(doc)
  await Promise.all([a.waitLink(b.id, doc), b.waitLink(a.id, doc)])

  ctx.step('A leaves')
  a.leave(doc)
  // The protocol has no acknowledgement. A control socket is processed in order, so once an
  // Introduction for a Join that A sent *after* its Leave arrives, the Leave has been applied.
  a.join(fence)
  h.join(fence)
  await a.waitLink(h.id, fence)
  // the clients close their pipes for a document they leave; the relay must pass that on
  await b.waitDisconnect(a.id, doc, 5000).catch(err => ctx.check(false, `after A left and closed its pipe: ${err.message}`))

  ctx.step('C joins the document A left')
  c.join(doc)
  const [lc, lb] = await Promise.all([c.waitLink(b.id, doc), b.waitLink(c.id, doc)])
  await exchange(ctx, c, b, lc, lb)
  await sleep(1000) // time for a wrong introduction to show up
  ctx.check(!a.link(c.id, doc), `A was introduced to C on ${doc} after leaving it`)
  ctx.check(!c.link(a.id, doc), `C was introduced to A on ${doc} after A left it`)
  return { doc, a: a.id, b: b.id, c: c.id }
}, { dialects: ['v3', 'v4'], defaultDialect: 'v3' })
