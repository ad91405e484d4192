// The same with @localfirst/relay@4.2.2's client: `new Client({ peerId, url })`, MessagePack
// control frames, `peer-connect` events.
import { scenario, seedHello } from '../lib.mjs'

scenario('hello_v4', ctx => seedHello(ctx, ['v4', 'v4']))
