// The seed's example with its two peers on two workers of one relay (RELAY_REDIS_URL): the 3.6.2
// client's control socket and pipe end on the first worker (<baseUrl>), the 4.2.2 client's on the
// second (--second=<url>). They must be introduced across workers, and their pipe, split across
// the two, must carry each greeting (one of them held before pairing) intact.
import { scenario, seedHello } from '../lib.mjs'

scenario('across_workers', ctx => seedHello(ctx, ['v3', 'v4'], [ctx.baseUrl, ctx.secondUrl]))
