// The WebSocket class the two npm clients get in these tests.
//
// In a browser the clients use the browser's WebSocket. In Node, @localfirst/relay-client@3.6.2
// reads the *global* `WebSocket` (Node 20 has none, so we must provide one) and
// @localfirst/relay@4.2.2 imports `isomorphic-ws`, i.e. plain `ws`. We give both this thin
// subclass of `ws` (build.mjs aliases `isomorphic-ws` to this file), which restores the two
// browser behaviours that matter for a relay:
//
// 1. binaryType defaults to "blob", as in browsers. The 3.x client does
//    `JSON.parse(event.data.toString())`; with ws' default ("nodebuffer") a *binary* frame would
//    parse fine in Node but is a Blob ("[object Blob]") in a browser. With "blob" here, a server
//    that sends a 3.x peer its Introduction in a binary frame fails the tests as it would fail a
//    browser. (The 4.x client sets binaryType = "arraybuffer" itself.)
//
// 2. "message", "close" and "error" events are dispatched as separate macrotasks, as in browsers.
//    With plain ws, frames that arrive in the same TCP read as the 101 response (e.g. frames the
//    relay held for this pipe and flushes the moment it pairs) are emitted on process.nextTick,
//    i.e. *before* the promise continuation in which both clients emit `peer-connect`; the
//    application, which attaches its message listener in `peer-connect`, would silently lose
//    them. That is a Node artefact, not a relay bug, so the harness must not report it as one.
//    setImmediate is FIFO, so the order of events is unchanged.
import WebSocket from 'ws'

export default class BrowserLikeWebSocket extends WebSocket {
  constructor(address, protocols, options) {
    super(address, protocols, options)
    this.binaryType = 'blob'
  }

  emit(event, ...args) {
    if (event === 'message' || event === 'close' || event === 'error') {
      setImmediate(() => super.emit(event, ...args))
      return this.listenerCount(event) > 0
    }
    return super.emit(event, ...args)
  }
}
