// N client peers in one lobby: every pair must be introduced and piped together, and each pipe
// must really lead to the peer it claims to (a message naming sender and receiver is sent over
// every one of the N·(N-1) pipe ends). --dialect=mixed alternates 3.x and 4.x clients.
import { Peer, dialectOf, scenario, uid } from '../lib.mjs'

const N = 8

scenario('many_peers', async ctx => {
  const lobby = uid('lobby')
  const peers = Array.from({ length: N }, (_, i) => new Peer(ctx, dialectOf(ctx.dialect, i), uid(`p${i}`)))
  ctx.step(`${N} peers join ${lobby}`)
  for (const p of peers) p.join(lobby)

  ctx.step('waiting for every peer to get a pipe to every other peer')
  await Promise.all(peers.flatMap(p => peers.filter(q => q !== p).map(q => p.waitLink(q.id, lobby, 20000))))

  ctx.step('sending one message over every pipe end')
  for (const p of peers) for (const link of p.links.values()) link.socket.send(JSON.stringify({ from: p.id, to: link.remote }))
  await Promise.all(peers.flatMap(p => [...p.links.values()].map(l => l.inbox.waitFrames(1, 10000, `message ${l.remote}→${p.id}`))))

  for (const p of peers) {
    ctx.check(p.links.size === N - 1, `${p.id} has ${p.links.size} pipes, expected ${N - 1}`)
    ctx.check(!p.link(p.id, lobby), `${p.id} was introduced to itself`)
    for (const link of p.links.values()) {
      const [first] = await link.inbox.frames()
      const ok = first.text && first.data === JSON.stringify({ from: link.remote, to: p.id })
      ctx.check(ok, `${p.id}'s pipe for ${link.remote} delivered ${first.text ? first.data : 'a binary frame'}`)
    }
  }
  return { peers: N, pipes: N * (N - 1), dialects: peers.map(p => p.dialect) }
}, { dialects: ['v3', 'v4', 'mixed'], defaultDialect: 'v3' })
