// The seed's example with @localfirst/relay-client@3.6.2: two `new Client({ userName, url })`
// join one lobby, each gets `peer.connect` for the other, and a greeting arrives each way.
import { scenario, seedHello } from '../lib.mjs'

scenario('hello_v3', ctx => seedHello(ctx, ['v3', 'v3']))
