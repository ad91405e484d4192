// Quick join for clients that know nothing of it: each player asks the relay's API for a place
// in a race (POST /api/lobbies/quick-join with its peer id), then an unmodified client (3.6.2 for
// the first, 4.2.2 for the second) joins the document id it got. Both are placed in the same
// lobby, meet there and greet each other over their pipe.
import { Peer, exchange, scenario, uid } from '../lib.mjs'

async function quickJoin(ctx, peerId, game) {
  const api = ctx.baseUrl.replace(/^ws/, 'http') + '/api/lobbies/quick-join'
  const response = await fetch(api, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ game, peerId, maxPeers: 2, filters: { map: 'desert' } }),
  })
  const body = await response.json()
  if (response.status !== 200) throw new Error(`quick join answered ${response.status}: ${JSON.stringify(body)}`)
  return body
}

scenario('quick_join', async ctx => {
  const game = uid('race')
  const [a, b] = [new Peer(ctx, 'v3', uid('alice')), new Peer(ctx, 'v4', uid('bob'))]
  ctx.step('alice asks for a race, then joins it')
  const first = await quickJoin(ctx, a.id, game)
  ctx.check(first.created === true, `the first request should make a lobby: ${JSON.stringify(first)}`)
  a.join(first.documentId)
  ctx.step('bob asks for a race, then joins it')
  const second = await quickJoin(ctx, b.id, game)
  ctx.check(second.documentId === first.documentId, `bob should be placed in alice's lobby: ${JSON.stringify(second)}`)
  b.join(second.documentId)
  ctx.step('they meet and greet')
  const [la, lb] = await Promise.all([a.waitLink(b.id, first.documentId), b.waitLink(a.id, first.documentId)])
  await exchange(ctx, a, b, la, lb)
  ctx.step('the lobby is full now: a third player gets a new one')
  const third = await quickJoin(ctx, uid('carol'), game)
  ctx.check(third.documentId !== first.documentId && third.created, `carol should get a lobby of her own: ${JSON.stringify(third)}`)
  return { lobby: first.documentId, capacity: first.lobby.maxPeers }
})
