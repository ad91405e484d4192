// A 3.6.2 peer meets a 4.2.2 peer in one lobby: the relay must introduce each in its own
// dialect (JSON `userName` vs MessagePack `peerId`) and pipe them together.
import { scenario, seedHello } from '../lib.mjs'

scenario('mixed_v3_v4', ctx => seedHello(ctx, ['v3', 'v4']))
