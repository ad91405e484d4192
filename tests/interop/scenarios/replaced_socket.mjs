// A second control socket for the same peerId replaces the first (a reloaded tab, or the
// client's own reconnect racing the old socket's death). The relay must close the OLD socket
// with 4409, and the NEW one must keep working: it gets introductions after it re-joins, and
// still after the old socket is gone.
//
// Known to FAIL against LF: it leaves the old socket open, and when the old socket finally
// closes it forgets the peer altogether (`delete peers[peerId]`), new socket included.
import { RawControl, scenario, sleep, uid } from '../lib.mjs'

scenario('replaced_socket', async ctx => {
  const [A, doc] = [uid('a'), uid('doc')]
  ctx.step('A opens a control socket and joins')
  const old = new RawControl(ctx, A, ctx.dialect)
  await old.opened()
  old.join(doc)
  await sleep(200)

  ctx.step('A opens a second control socket')
  const fresh = new RawControl(ctx, A, ctx.dialect)
  await fresh.opened()
  const closed = await old.inbox.waitClose(5000).catch(() => null)
  ctx.check(closed, 'the old control socket was not closed by the relay within 5 s of being replaced')
  if (closed) ctx.check(closed.code === 4409, `the old control socket was closed with code ${closed.code}, expected 4409`)
  ctx.details.old_socket = closed ? { closed_with: closed.code, reason: closed.reason } : 'left open'

  ctx.step('the new socket re-joins (as the clients do on reconnect); C joins')
  fresh.join(doc)
  const c = new RawControl(ctx, uid('c'), ctx.dialect)
  await c.opened()
  c.join(doc)
  await Promise.all([fresh.waitIntroduction(c.peerId, doc), c.waitIntroduction(A, doc)])
  ctx.check(!(await old.introductions()).some(x => x.peerId === c.peerId), 'the replaced socket was introduced to C')

  ctx.step('the old socket is surely gone now; D joins')
  if (!old.inbox.closed) {
    old.close()
    await old.inbox.waitClose(5000)
  }
  await sleep(300)
  const d = new RawControl(ctx, uid('d'), ctx.dialect)
  await d.opened()
  d.join(doc)
  await Promise.all([
    fresh.waitIntroduction(d.peerId, doc).catch(err => ctx.check(false, `after the old socket closed, the new one was not introduced to D: ${err.message}`)),
    d.waitIntroduction(A, doc).catch(err => ctx.check(false, `after the old socket closed, D was not introduced to A: ${err.message}`)),
  ])
  ctx.check(!fresh.inbox.closed, `the new control socket was closed (code ${fresh.inbox.closed?.code})`)
  return ctx.details
}, { dialects: ['v3', 'v4'], defaultDialect: 'v3' })
