// A minimal WebSocket client (RFC 6455) over a raw TCP socket, written for the load generator.
//
// Why not a full client library: the generator must cost far less per message than the servers
// it measures, or it measures itself. Three things make this client cheap:
//   * frames are masked with the all-zero key. RFC 6455 requires clients to mask, and the
//     server still unmasks every byte (its cost is unchanged), but an all-zero key makes the
//     masked bytes equal the payload, so the client copies frames instead of XOR-ing them;
//   * many frames are written with one write() call (the caller builds the batch);
//   * reads go straight into one reused buffer (net's `onread` option: no per-read allocation,
//     no stream machinery) and received frames are handed over as views into it, uncopied.
// No extensions are offered (no permessage-deflate): both servers see plain frames.
// `ws` (the library) is kept as a cross-check transport in loadgen.mjs (--client ws).

import { createHash, randomBytes } from "node:crypto";
import net from "node:net";

export const OP_CONT = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_HANDSHAKE_BYTES = 16 * 1024;
// A frame larger than this is a protocol failure for the benchmark (nothing we send is bigger).
const MAX_FRAME_BYTES = 64 * 1024 * 1024;
// Every socket reads into this one buffer: callbacks run one at a time and nothing keeps a view
// into it past its callback (partial frames are copied out), so one buffer serves them all.
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

/** Length of the header that encodeFrame() writes for a payload of `n` bytes. */
export function headerLength(n) {
  return (n < 126 ? 2 : n < 65536 ? 4 : 10) + 4;
}

/**
 * Writes one client frame (FIN set, zero mask key) for `payload` into `out` at `offset`.
 * Returns the offset just past the frame.
 */
export function writeFrame(out, offset, payload, opcode = OP_BINARY) {
  const n = payload.length;
  out[offset++] = 0x80 | opcode;
  if (n < 126) {
    out[offset++] = 0x80 | n;
  } else if (n < 65536) {
    out[offset++] = 0x80 | 126;
    out.writeUInt16BE(n, offset);
    offset += 2;
  } else {
    out[offset++] = 0x80 | 127;
    out.writeUInt32BE(Math.floor(n / 2 ** 32), offset);
    out.writeUInt32BE(n >>> 0, offset + 4);
    offset += 8;
  }
  out.writeUInt32BE(0, offset); // the all-zero masking key
  offset += 4;
  payload.copy(out, offset);
  return offset + n;
}

/** Encodes one client frame for `payload` into a fresh Buffer. */
export function encodeFrame(payload, opcode = OP_BINARY) {
  const out = Buffer.allocUnsafe(headerLength(payload.length) + payload.length);
  writeFrame(out, 0, payload, opcode);
  return out;
}

/**
 * One client WebSocket connection.
 *
 * Set `onmessage(payload, isBinary)` to receive data messages (payload is a view that is only
 * valid during the call) and `onclose(code, reason)` to learn that the connection ended (called
 * once, also for TCP errors; `code` 1006 then).
 */
export class RawWebSocket {
  /**
   * @param {net.Socket} socket an open TCP socket past the HTTP upgrade, whose reads the caller
   *   routes to _onData()
   * @param {Buffer} leftover bytes read after the 101 response
   */
  constructor(socket, leftover) {
    this.socket = socket;
    this._onmessage = null;
    this.backlog = []; // messages that arrived before onmessage was set (copied)
    this.onclose = null;
    this.closed = false;
    this.closeCode = null;
    this.pending = null; // unparsed bytes carried over between reads
    this.fragments = null; // data frames of a fragmented message
    this.fragmentOpcode = 0;
    socket.on("error", () => this._finish(1006, "tcp error"));
    socket.on("close", () => this._finish(this.closeCode ?? 1006, ""));
    // Frames that came in the same read as the 101 response (a server may flush held frames
    // right after it); they wait in the backlog until the caller sets onmessage.
    if (leftover && leftover.length) this._onData(leftover);
  }

  get onmessage() {
    return this._onmessage;
  }

  set onmessage(handler) {
    this._onmessage = handler;
    while (handler && this.backlog.length) {
      const [payload, isBinary] = this.backlog.shift();
      handler(payload, isBinary);
    }
  }

  _deliver(payload, isBinary) {
    if (this._onmessage) this._onmessage(payload, isBinary);
    else this.backlog.push([Buffer.from(payload), isBinary]);
  }

  /** Sends one data message. */
  send(payload, opcode = OP_BINARY) {
    if (this.closed) return false;
    return this.socket.write(encodeFrame(payload, opcode));
  }

  /** Writes bytes that already hold one or more encoded frames (see writeFrame). */
  sendEncoded(frames) {
    if (this.closed) return false;
    return this.socket.write(frames);
  }

  /** Starts the closing handshake and makes sure the TCP socket ends soon after. */
  close(code = 1000) {
    if (this.closed) return;
    const body = Buffer.alloc(2);
    body.writeUInt16BE(code, 0);
    this.socket.write(encodeFrame(body, OP_CLOSE));
    this.socket.end();
    // Do not wait on the server's close frame for ever.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  /** Drops the connection without a closing handshake. */
  destroy() {
    this.socket.destroy();
  }

  _finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    if (this.onclose) this.onclose(code, reason);
  }

  _protocolError(why) {
    this.closeCode = 1002;
    this._finish(1002, why);
  }

  /** Parses `chunk` (a view into the shared read buffer, valid only during this call). */
  _onData(chunk) {
    let buf = chunk;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    let off = 0;
    const end = buf.length;
    while (!this.closed) {
      if (end - off < 2) break;
      const b0 = buf[off];
      const b1 = buf[off + 1];
      if (b1 & 0x80) return this._protocolError("masked server frame");
      if (b0 & 0x70) return this._protocolError("reserved bits set (no extension was agreed)");
      let len = b1 & 0x7f;
      let hdr = 2;
      if (len === 126) {
        if (end - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        hdr = 4;
      } else if (len === 127) {
        if (end - off < 10) break;
        len = buf.readUInt32BE(off + 2) * 2 ** 32 + buf.readUInt32BE(off + 6);
        hdr = 10;
      }
      if (len > MAX_FRAME_BYTES) return this._protocolError("frame too large");
      if (end - off < hdr + len) break;
      const payload = buf.subarray(off + hdr, off + hdr + len);
      off += hdr + len;
      this._onFrame(b0 & 0x80, b0 & 0x0f, payload);
    }
    // Copy a partial frame out: the shared read buffer is overwritten by the next read.
    if (off < end && !this.closed) this.pending = Buffer.from(buf.subarray(off));
  }

  _onFrame(fin, opcode, payload) {
    if (opcode >= 0x8) {
      if (opcode === OP_PING) {
        this.socket.write(encodeFrame(payload, OP_PONG));
      } else if (opcode === OP_CLOSE) {
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        if (!this.socket.writableEnded) {
          // Echo the close frame, as the closing handshake requires.
          this.socket.write(encodeFrame(payload.subarray(0, 2), OP_CLOSE));
          this.socket.end();
        }
        this._finish(this.closeCode, payload.subarray(2).toString());
      }
      return;
    }
    if (opcode !== OP_CONT && !fin) {
      this.fragments = [Buffer.from(payload)];
      this.fragmentOpcode = opcode;
      return;
    }
    if (opcode === OP_CONT) {
      if (!this.fragments) return this._protocolError("continuation without a start");
      this.fragments.push(Buffer.from(payload));
      if (!fin) return;
      const whole = Buffer.concat(this.fragments);
      const op = this.fragmentOpcode;
      this.fragments = null;
      this._deliver(whole, op === OP_BINARY);
      return;
    }
    this._deliver(payload, opcode === OP_BINARY);
  }
}

/**
 * Opens a WebSocket to ws://host:port/path. Resolves with a RawWebSocket once the server's
 * 101 response has been checked; rejects on refusal, a bad response or after `timeoutMs`.
 */
export function connect(host, port, path, { timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const key = randomBytes(16).toString("base64");
    const expectedAccept = createHash("sha1")
      .update(key + WS_GUID)
      .digest("base64");
    let ws = null;
    const socket = net.connect({
      host,
      port,
      noDelay: true,
      onread: {
        buffer: READ_BUFFER,
        callback: (nread, buf) => {
          const chunk = buf.subarray(0, nread);
          if (ws) ws._onData(chunk);
          else onHandshakeData(chunk);
        },
      },
    });
    let head = Buffer.alloc(0);
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(`${path}: ${why}`));
    };
    const timer = setTimeout(() => fail("handshake timed out"), timeoutMs);
    socket.on("error", (err) => fail(err.message));
    socket.on("close", () => fail("closed during handshake"));
    socket.on("connect", () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    const onHandshakeData = (chunk) => {
      if (settled) return;
      head = Buffer.concat([head, chunk]); // copies out of the shared read buffer
      const endOfHead = head.indexOf("\r\n\r\n");
      if (endOfHead < 0) {
        if (head.length > MAX_HANDSHAKE_BYTES) fail("handshake response too large");
        return;
      }
      const lines = head.subarray(0, endOfHead).toString("latin1").split("\r\n");
      const status = lines[0].split(" ")[1];
      if (status !== "101") return fail(`handshake refused: ${lines[0]}`);
      const headers = new Map();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(":");
        if (colon > 0) {
          headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
        }
      }
      if (headers.get("sec-websocket-accept") !== expectedAccept) {
        return fail("bad Sec-WebSocket-Accept");
      }
      if (headers.has("sec-websocket-extensions")) {
        return fail("server agreed to an extension that was not offered");
      }
      settled = true;
      clearTimeout(timer);
      socket.removeAllListeners("error");
      socket.removeAllListeners("close");
      ws = new RawWebSocket(socket, head.subarray(endOfHead + 4));
      resolve(ws);
    };
  });
}
