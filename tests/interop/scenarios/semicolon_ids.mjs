// Ids with a literal ";", which the unmodified clients send unescaped (";" is a legal path
// character, so neither they nor the URL parser encode it), e.g. /introduction/tom;jerry.
// The relay must take the whole segment as the id.
//
// Kept apart from encoded_ids because of one known trap: daphne's WebSocket layer (autobahn)
// splits the request target with urllib.parse.urlparse, which cuts ";..." off the LAST path
// segment as "params", and neither `path` nor `raw_path` in the ASGI scope has it any more; so
// under daphne /introduction/<peerId> and the documentId of /connection/... lose everything from
// the ";" on. uvicorn passes the target through intact.
import { Peer, exchange, scenario, uid } from '../lib.mjs'

scenario('semicolon_ids', async ctx => {
  const tag = uid('x').slice(2)
  const doc = `lobby;${tag};v=2` // the last segment of /connection/<A>/<B>/<doc>
  ctx.step('two clients whose ids contain ";" join a document whose id contains ";"')
  const a = new Peer(ctx, ctx.dialect, `tom;${tag}`) // the last segment of /introduction/<peerId>
  const b = new Peer(ctx, ctx.dialect, `jerry ${tag};x=1`)
  a.join(doc)
  b.join(doc)
  const [la, lb] = await Promise.all([a.waitLink(b.id, doc), b.waitLink(a.id, doc)])
  await exchange(ctx, a, b, la, lb)
  return { ids: [a.id, b.id], doc }
}, { dialects: ['v3', 'v4'], defaultDialect: 'v3' })
