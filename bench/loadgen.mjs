// Load generator for the relay benchmark. It speaks the relay protocol directly over raw
// WebSockets (no LF client): a pipe is two sockets, /connection/A/B/doc and /connection/B/A/doc.
//
// Usage: node loadgen.mjs TEST 'JSON-OPTIONS'
//   TEST is one of: pipe, echo, setup, intro, idle (see the functions of the same name).
//
// Many workers: with `ports` (a list) and `placement`, the sockets go to several workers of one
// relay (see workerOf): "split" puts peer A's sockets on the first and peer B's on the second, so
// every pipe and every introduction crosses between them; "local" keeps each pair's sockets on
// one worker (pairs alternate), as a proxy that hashes the document id does.
//
// Output: one JSON object per line on stdout. {"event":"mark",...} lines tell the harness when a
// measurement window starts and ends (it samples the server's CPU time then); the last line is
// {"event":"result",...} or {"event":"error",...}. The exit status is 0 when a result was
// printed, even if the result reports lost or reordered frames (the result says so).
//
// Every wait is bounded in time and every loop in count: a stuck server fails the test, it
// never hangs it.

import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { pack, unpack } from "msgpackr";
import WebSocket from "ws";
import { connect as rawConnect, headerLength, OP_BINARY, OP_TEXT, writeFrame } from "./wsraw.mjs";

const now = () => performance.now(); // milliseconds, monotonic, sub-microsecond resolution

function emit(obj) {
  // stdout to a pipe is synchronous on Linux, so a mark line leaves before the next frame.
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until predicate() is true, polling every `stepMs`; false if `timeoutMs` passed first. */
async function waitFor(predicate, timeoutMs, stepMs = 5) {
  const deadline = now() + timeoutMs;
  while (!predicate()) {
    if (now() > deadline) return false;
    await sleep(stepMs);
  }
  return true;
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** Summary of latency samples given in milliseconds, reported in microseconds. */
function latencySummary(samplesMs) {
  const s = Float64Array.from(samplesMs).sort();
  const us = (v) => (v === null ? null : Math.round(v * 1000 * 10) / 10);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : null;
  return {
    samples: s.length,
    p50_us: us(percentile(s, 0.5)),
    p90_us: us(percentile(s, 0.9)),
    p99_us: us(percentile(s, 0.99)),
    min_us: us(s.length ? s[0] : null),
    max_us: us(s.length ? s[s.length - 1] : null),
    mean_us: us(mean),
  };
}

function cpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

// ---------------------------------------------------------------------------------------------
// Transports. Both expose: onmessage(payload, isBinary) (settable), onclose(code), closed,
// send(payload, opcode), close(). The pipe test writes bursts through writeBurst().

/** Adapter that gives a `ws` library socket the RawWebSocket interface (cross-check only). */
class WsLibConn {
  constructor(ws) {
    this.ws = ws;
    this.closed = false;
    this._onmessage = null;
    this.backlog = [];
    this.onclose = null;
    ws.on("message", (data, isBinary) => {
      if (this._onmessage) this._onmessage(data, isBinary);
      else this.backlog.push([data, isBinary]);
    });
    ws.on("close", (code) => {
      this.closed = true;
      this.closeCode = code;
      if (this.onclose) this.onclose(code);
    });
    ws.on("error", () => {});
  }

  get onmessage() {
    return this._onmessage;
  }

  set onmessage(handler) {
    this._onmessage = handler;
    while (handler && this.backlog.length) handler(...this.backlog.shift());
  }

  send(payload, opcode = OP_BINARY) {
    if (this.closed) return false;
    this.ws.send(payload, { binary: opcode === OP_BINARY });
    return true;
  }

  close(code = 1000) {
    if (!this.closed) this.ws.close(code);
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  destroy() {
    this.ws.terminate();
  }
}

function wsLibConnect(host, port, path, { timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${host}:${port}${path}`, {
      perMessageDeflate: false,
      // An all-zero mask makes `ws` skip the XOR, as the raw client does.
      generateMask: (mask) => mask.fill(0),
      handshakeTimeout: timeoutMs,
    });
    ws.once("open", () => resolve(new WsLibConn(ws)));
    ws.once("error", (err) => reject(new Error(`${path}: ${err.message}`)));
    ws.once("unexpected-response", (_req, res) =>
      reject(new Error(`${path}: handshake refused: ${res.statusCode}`)),
    );
  });
}

/** connectFn(path, worker = 0): a socket to `path` on worker number `worker` of opts.ports. */
function makeConnector(opts) {
  const { host, client = "raw" } = opts;
  const ports = opts.ports ?? [opts.port];
  const portOf = (worker) => {
    if (ports[worker] === undefined) throw new Error(`no port for worker ${worker}`);
    return ports[worker];
  };
  if (client === "ws") return (path, worker = 0) => wsLibConnect(host, portOf(worker), path);
  if (client === "raw") return (path, worker = 0) => rawConnect(host, portOf(worker), path);
  throw new Error(`unknown client ${client}`);
}

/**
 * The worker (index into opts.ports) that serves a socket of peer `side` (0: A, the sender; 1: B)
 * of pair `p`. Placement "split": A on worker 0 and B on worker 1, so everything between them
 * crosses workers; "local": both on worker p % 2; none ("one"): worker 0.
 */
function workerOf(opts, side, p) {
  const placement = opts.placement ?? "one";
  if (placement === "one") return 0;
  if ((opts.ports ?? []).length < 2) throw new Error(`placement ${placement} needs two ports`);
  if (placement === "split") return side;
  if (placement === "local") return p % 2;
  throw new Error(`unknown placement ${placement}`);
}

/**
 * Opens all `paths`, at most `concurrency` handshakes at a time (listen backlogs are small);
 * path number i on worker `workerAt(i)`.
 */
async function openAll(connectFn, paths, concurrency, workerAt = () => 0) {
  const conns = new Array(paths.length);
  let next = 0;
  async function worker() {
    while (next < paths.length) {
      const i = next++;
      conns[i] = await connectFn(paths[i], workerAt(i));
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, paths.length) }, worker));
  } catch (err) {
    for (const c of conns) if (c) c.destroy();
    throw err;
  }
  return conns;
}

/**
 * Introduces peers the way a real client is introduced before it opens pipes: a control socket
 * per peer, each Joins its pair's document, and both wait for their Introduction. Part 2 of the
 * protocol lets a server refuse pipes that it has not introduced, so pipes are set up this way
 * unless `introduce` is false. Returns the control sockets; they stay open while the pipes live.
 */
async function introducePairs(opts, connectFn, pairs, first = 0) {
  const paths = pairs.flatMap(({ A, B }) => [`/introduction/${A}`, `/introduction/${B}`]);
  const conns = await openAll(connectFn, paths, opts.connect_concurrency ?? 32, (i) =>
    workerOf(opts, i % 2, first + Math.floor(i / 2)),
  );
  let introduced = 0;
  pairs.forEach(({ A, B, doc }, p) => {
    [
      [conns[2 * p], B],
      [conns[2 * p + 1], A],
    ].forEach(([conn, other]) => {
      let done = false;
      conn.onmessage = (data) => {
        let msg;
        try {
          msg = unpack(data);
        } catch {
          return;
        }
        if (!done && msg?.type === "Introduction" && msg.peerId === other) {
          done = true;
          introduced++;
        }
      };
      conn.send(pack({ type: "Join", documentIds: [doc] }), OP_BINARY);
    });
  });
  if (!(await waitFor(() => introduced === 2 * pairs.length, 10000))) {
    const why = closedSummary(conns);
    for (const c of conns) c.destroy();
    throw new Error(`only ${introduced} of ${2 * pairs.length} introductions within 10 s; ${why}`);
  }
  return conns;
}

/** The peer ids and document of pipe number `p` of a test (distinct across tests and runs). */
function pairNames(opts, tag, p) {
  const pre = `${opts.prefix}${tag}`;
  return { A: `${pre}a${p}`, B: `${pre}b${p}`, doc: `${pre}d${p}` };
}

/**
 * Opens `count` pipes and returns [{a, b, control}] once every pipe is known to be paired: each b
 * sends one probe frame and each a waits for it. a's later frames therefore never meet the held
 * path (the LF server re-encodes held frames, which would read as corruption here).
 */
async function openPipes(opts, count, tag) {
  const connectFn = makeConnector(opts);
  const names = Array.from({ length: count }, (_, p) => pairNames(opts, tag, p));
  const control = opts.introduce === false ? [] : await introducePairs(opts, connectFn, names);
  const paths = names.flatMap(({ A, B, doc }) => [
    `/connection/${A}/${B}/${doc}`,
    `/connection/${B}/${A}/${doc}`,
  ]);
  const conns = await openAll(connectFn, paths, opts.connect_concurrency ?? 32, (i) =>
    workerOf(opts, i % 2, Math.floor(i / 2)),
  );
  const pipes = [];
  let probed = 0;
  for (let p = 0; p < count; p++) {
    const pipe = { a: conns[2 * p], b: conns[2 * p + 1], probed: false };
    pipe.a.onmessage = () => {
      if (!pipe.probed) {
        pipe.probed = true;
        probed++;
      }
    };
    pipe.b.send(Buffer.from("probe"), OP_BINARY);
    pipes.push(pipe);
  }
  if (!(await waitFor(() => probed === count, 10000))) {
    const why = closedSummary(conns);
    for (const c of [...conns, ...control]) c.destroy();
    throw new Error(`only ${probed} of ${count} pipes delivered their probe within 10 s; ${why}`);
  }
  pipes.control = control;
  return pipes;
}

/** "2 closed by the server (4403 x2)": why a set-up step failed, for the error message. */
function closedSummary(conns) {
  const codes = conns.filter((c) => c.closed).map((c) => c.closeCode ?? "?");
  if (!codes.length) return "none closed";
  const counts = {};
  for (const code of codes) counts[code] = (counts[code] ?? 0) + 1;
  const list = Object.entries(counts).map(([code, n]) => `${code} x${n}`);
  return `${codes.length} closed by the server (close codes: ${list.join(", ")})`;
}

async function closeAll(conns, timeoutMs = 3000) {
  for (const c of conns) c.close();
  await waitFor(() => conns.every((c) => c.closed), timeoutMs, 10);
  for (const c of conns) if (!c.closed) c.destroy();
}

// ---------------------------------------------------------------------------------------------
// pipe: one-way throughput through `pairs` pipes.
//
// Sender a streams frames of `size` bytes; receiver b checks each one (length, binary opcode,
// pair index, sequence number, and every payload byte against the expected pattern) and sends an
// 8-byte ack back over the same pipe every `ack_every` frames. a keeps at most `window` frames
// unacknowledged and writes each refill as one burst (one write() of many frames), so the
// generator spends little per frame. Throughput counts the frames b received inside the
// measurement window (after a warm-up). After the window the senders stop and the test waits for
// every sent frame to arrive: anything missing is reported as lost.

const ACK_MAGIC = 0xacc0acc0;
const MAX_ANOMALIES_KEPT = 10;

function patternFor(size) {
  const buf = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + 7) & 0xff;
  return buf;
}

async function pipe(opts) {
  const size = opts.size;
  const window = opts.window;
  const ackEvery = Math.max(1, opts.ack_every ?? Math.floor(window / 4));
  const verify = opts.verify_payload ?? true;
  if (size < 8) throw new Error("size must be at least 8 (pair index and sequence number)");
  const pipes = await openPipes(opts, opts.pairs, "p");

  const pattern = patternFor(size);
  const flen = headerLength(size) + size;
  const anomalies = [];
  // gaps: a sequence number jumped ahead (lost or reordered); backwards: it went back
  // (duplicated or reordered); missing: never arrived by the end of the drain.
  const counts = { gaps: 0, backwards: 0, missing: 0, corrupt: 0, closed: 0 };
  const note = (kind, detail) => {
    if (anomalies.length < MAX_ANOMALIES_KEPT) anomalies.push({ kind, ...detail });
  };
  let running = false;
  let totalReceived = 0;

  // One encoded frame per pair: a burst is n copies of it with the sequence number patched in.
  const states = pipes.map((pipe, p) => {
    const payload = Buffer.from(pattern);
    payload.writeUInt32LE(p, 0);
    return {
      p,
      a: pipe.a,
      b: pipe.b,
      payload,
      template: (() => {
        const t = Buffer.allocUnsafe(flen);
        writeFrame(t, 0, payload, OP_BINARY);
        return t;
      })(),
      sent: 0,
      acked: 0,
      expected: 0, // next sequence number b expects
      received: 0,
      windowStart: 0,
    };
  });
  const seqOffset = headerLength(size) + 4;

  const writeBurst =
    opts.client === "ws"
      ? (st, n) => {
          const sock = st.a.ws._socket;
          sock.cork();
          for (let i = 0; i < n; i++) {
            const frame = Buffer.from(st.payload); // ws keeps a reference until written
            frame.writeUInt32LE(st.sent++ >>> 0, 4);
            st.a.send(frame, OP_BINARY);
          }
          process.nextTick(() => sock.uncork());
        }
      : (st, n) => {
          const out = Buffer.allocUnsafe(n * flen);
          for (let i = 0, off = 0; i < n; i++, off += flen) {
            st.template.copy(out, off);
            out.writeUInt32LE(st.sent++ >>> 0, off + seqOffset);
          }
          st.a.sendEncoded(out);
        };

  const pump = (st) => {
    if (!running || st.a.closed) return;
    const n = window - (st.sent - st.acked);
    if (n > 0) writeBurst(st, n);
  };

  for (const st of states) {
    st.a.onmessage = (data) => {
      if (data.length === 8 && data.readUInt32LE(0) === ACK_MAGIC) {
        st.acked = data.readUInt32LE(4);
        pump(st);
      } else {
        counts.corrupt++;
        note("unexpected frame to sender", { pair: st.p, length: data.length });
      }
    };
    st.b.onmessage = (data, isBinary) => {
      if (!isBinary || data.length !== size || data.readUInt32LE(0) !== st.p) {
        counts.corrupt++;
        note("wrong frame", { pair: st.p, binary: isBinary, length: data.length });
        return;
      }
      const seq = data.readUInt32LE(4);
      if (seq !== st.expected) {
        if (seq < st.expected) {
          counts.backwards++;
          note("duplicate or reordered", { pair: st.p, expected: st.expected, got: seq });
        } else {
          counts.gaps++;
          note("gap (lost or reordered)", { pair: st.p, expected: st.expected, got: seq });
        }
        st.expected = seq;
      }
      if (verify && data.compare(pattern, 8, size, 8, size) !== 0) {
        counts.corrupt++;
        note("payload bytes altered", { pair: st.p, seq });
      }
      st.expected++;
      st.received++;
      totalReceived++;
      if (st.received % ackEvery === 0) {
        // A fresh buffer: the ws library may still hold the previous one, unwritten.
        const ackBuf = Buffer.allocUnsafe(8);
        ackBuf.writeUInt32LE(ACK_MAGIC, 0);
        ackBuf.writeUInt32LE(st.received, 4);
        st.b.send(ackBuf, OP_BINARY);
      }
    };
    const onClose = () => {
      if (running) {
        counts.closed++;
        note("socket closed during the run", { pair: st.p });
      }
    };
    st.a.onclose = onClose;
    st.b.onclose = onClose;
  }

  const warmupMs = opts.warmup_s * 1000;
  const durationMs = opts.duration_s * 1000;
  running = true;
  for (const st of states) pump(st);

  await sleep(warmupMs);
  const t1 = now();
  const r1 = totalReceived;
  const c1 = cpuMs();
  for (const st of states) st.windowStart = st.received;
  emit({ event: "mark", name: "window_start" });
  await sleep(durationMs);
  const t2 = now();
  const r2 = totalReceived;
  const c2 = cpuMs();
  emit({ event: "mark", name: "window_end" });
  running = false;
  const perPair = states.map((st) => st.received - st.windowStart);

  // Drain: every frame sent must arrive.
  const sentTotal = () => states.reduce((a, st) => a + st.sent, 0);
  const drained = await waitFor(
    () => states.every((st) => st.received >= st.sent || st.b.closed),
    opts.drain_timeout_s * 1000,
  );
  const totalSent = sentTotal();
  for (const st of states) {
    if (st.received < st.sent) {
      counts.missing += st.sent - st.received;
      note("frames never arrived", { pair: st.p, sent: st.sent, received: st.received });
    }
  }
  await closeAll([...states.flatMap((st) => [st.a, st.b]), ...pipes.control]);

  const elapsedS = (t2 - t1) / 1000;
  const messages = r2 - r1;
  const valid = Object.values(counts).every((v) => v === 0) && drained;
  return {
    test: "pipe",
    pairs: opts.pairs,
    size,
    window,
    ack_every: ackEvery,
    client: opts.client ?? "raw",
    elapsed_s: elapsedS,
    messages,
    msgs_per_s: messages / elapsedS,
    mb_per_s: (messages * size) / elapsedS / 1e6,
    total_sent: totalSent,
    total_received: totalReceived,
    per_pair_min: Math.min(...perPair),
    per_pair_max: Math.max(...perPair),
    gen_cpu_pct: ((c2 - c1) / (t2 - t1)) * 100,
    valid,
    drained,
    anomalies: counts,
    anomaly_examples: anomalies,
  };
}

// ---------------------------------------------------------------------------------------------
// echo: round-trip time over one pipe, one message in flight. a sends a frame, b (also in this
// process) sends it straight back, a times the round trip and sends the next. Two relays per
// sample, plus the generator's own turn-around.

async function echo(opts) {
  const size = opts.size ?? 64;
  const total = opts.warmup + opts.samples;
  const pipes = await openPipes(opts, 1, "e");
  const pipe = pipes[0];
  const payload = patternFor(size);
  payload.writeUInt32LE(0xec40ec40, 0);
  const samples = [];
  let seq = 0;
  let sentAt = 0;
  let errors = 0;
  let done = false;
  let finish;
  const finished = new Promise((resolve) => {
    finish = resolve;
  });
  pipe.b.onmessage = (data, isBinary) => pipe.b.send(data, isBinary ? OP_BINARY : OP_TEXT);
  // A lost frame would stall the ping-pong: give each round trip `sample_timeout_s`.
  let stalled = false;
  let sampleTimer = null;
  const sendNext = () => {
    payload.writeUInt32LE(seq, 4);
    sentAt = now();
    pipe.a.send(payload, OP_BINARY);
    clearTimeout(sampleTimer);
    sampleTimer = setTimeout(() => {
      stalled = true;
      finish();
    }, (opts.sample_timeout_s ?? 5) * 1000);
  };
  pipe.a.onmessage = (data) => {
    const t = now();
    if (data.length !== size || data.readUInt32LE(4) !== seq || !data.equals(payload)) errors++;
    if (seq >= opts.warmup) samples.push(t - sentAt);
    // Marks for the harness's CPU readings (noise check) around the measured samples.
    if (seq === opts.warmup - 1) emit({ event: "mark", name: "window_start" });
    if (seq === total - 1) emit({ event: "mark", name: "window_end" });
    seq++;
    if (seq >= total) {
      done = true;
      finish();
    } else {
      sendNext();
    }
  };
  const c1 = cpuMs();
  const t1 = now();
  sendNext();
  const timer = setTimeout(finish, opts.max_s * 1000);
  await finished;
  clearTimeout(timer);
  clearTimeout(sampleTimer);
  const t2 = now();
  const c2 = cpuMs();
  await closeAll([pipe.a, pipe.b, ...pipes.control]);
  return {
    test: "echo",
    size,
    completed: done,
    stalled,
    errors,
    gen_cpu_pct: ((c2 - c1) / (t2 - t1)) * 100,
    valid: done && errors === 0,
    ...latencySummary(samples),
  };
}

// ---------------------------------------------------------------------------------------------
// setup: time from starting to open both /connection sockets of a new pipe to the moment b
// receives the first frame a sent (a sends as soon as its own handshake completes, so that frame
// may be held by the server if b is not there yet). One pipe at a time. The peers are introduced
// over control sockets first (unless `introduce` is false), outside the timed part.

async function setup(opts) {
  const connectFn = makeConnector(opts);
  const samples = [];
  const delivered = { unchanged: 0, msgpack_wrapped: 0, other: 0 };
  let failures = 0;
  const firstError = [];
  const deadline = now() + opts.max_s * 1000;
  const total = opts.warmup + opts.samples;
  for (let i = 0; i < total && now() < deadline; i++) {
    if (i === opts.warmup) emit({ event: "mark", name: "window_start" });
    const { A, B, doc } = pairNames(opts, "s", i);
    const probe = Buffer.from(`setup-probe-${String(i).padStart(6, "0")}`);
    let a;
    let b;
    let control = [];
    try {
      if (opts.introduce !== false) {
        control = await introducePairs(opts, connectFn, [{ A, B, doc }], i);
      }
      const t0 = now();
      const got = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("first frame timed out")), 10000);
        const pa = connectFn(`/connection/${A}/${B}/${doc}`, workerOf(opts, 0, i)).then((conn) => {
          a = conn;
          a.send(probe, OP_BINARY);
        });
        const pb = connectFn(`/connection/${B}/${A}/${doc}`, workerOf(opts, 1, i)).then((conn) => {
          b = conn;
          b.onmessage = (data) => {
            clearTimeout(timer);
            resolve([now(), Buffer.from(data)]);
          };
        });
        pa.catch(reject);
        pb.catch(reject);
      });
      const [t1, data] = await got;
      if (i >= opts.warmup) samples.push(t1 - t0);
      // msgpack bin8 of the probe: how LF 4.2.2 re-encodes a frame it held before pairing.
      const wrapped =
        data.length === probe.length + 2 && data[0] === 0xc4 && data.subarray(2).equals(probe);
      if (data.equals(probe)) delivered.unchanged++;
      else if (wrapped) delivered.msgpack_wrapped++;
      else delivered.other++;
    } catch (err) {
      failures++;
      if (firstError.length < 3) firstError.push(String(err.message ?? err));
    } finally {
      // Both are closed before the next pipe starts so that pipes never overlap.
      await closeAll([a, b, ...control].filter(Boolean), 2000);
    }
  }
  emit({ event: "mark", name: "window_end" });
  return {
    test: "setup",
    failures,
    errors: firstError,
    first_frame: delivered,
    valid: failures === 0 && delivered.other === 0,
    ...latencySummary(samples),
  };
}

// ---------------------------------------------------------------------------------------------
// intro: `peers` control sockets join one document at once (4.x dialect: binary MessagePack);
// every peer must be introduced to every other one exactly once: peers*(peers-1) Introduction
// messages. Rate = messages / (time of the last one - time the first Join was sent). The first
// `warmup_rounds` rounds are checked but left out of the rates.

async function intro(opts) {
  const connectFn = makeConnector(opts);
  const n = opts.peers;
  const expected = n * (n - 1);
  const rounds = [];
  const warmupRounds = opts.warmup_rounds ?? 1;
  for (let r = 0; r < warmupRounds + opts.rounds; r++) {
    const ids = Array.from({ length: n }, (_, i) => `${opts.prefix}r${r}p${i}`);
    const idSet = new Set(ids);
    const doc = `${opts.prefix}lobby${r}`;
    // Many workers: "split" spreads the lobby's peers over the two (every other peer on each),
    // "local" keeps them all on the first.
    const conns = await openAll(
      connectFn,
      ids.map((id) => `/introduction/${id}`),
      opts.connect_concurrency ?? 32,
      (i) => workerOf(opts, i % 2, 0),
    );
    // The timed part only counts and keeps a copy of each frame: decoding and checking happen
    // after the round, so that the generator's own work does not slow the figure down.
    const got = [];
    let count = 0;
    let tLast = 0;
    conns.forEach((c, i) => {
      c.onmessage = (data, isBinary) => {
        got.push([i, isBinary, Buffer.from(data)]);
        count++;
        tLast = now();
        // Tell the harness at once, so that its reading of the server's CPU time ends here.
        if (count === expected) emit({ event: "mark", name: `round${r}_end` });
      };
    });
    const joins = conns.map(() => pack({ type: "Join", documentIds: [doc] }));
    // The harness reads the server's CPU time on this mark; the pause lets it do so before the
    // round starts (the server is idle meanwhile, so the reading does not depend on when).
    emit({ event: "mark", name: `round${r}_start` });
    await sleep(20);
    const c0 = cpuMs();
    const t0 = now();
    conns.forEach((c, i) => c.send(joins[i], OP_BINARY));
    const complete = await waitFor(() => count >= expected, opts.timeout_s * 1000, 1);
    const c1 = cpuMs();
    const t1 = now();
    // A little longer, so that an extra (duplicate) introduction would be seen.
    await sleep(50);
    const elapsed = (tLast - t0) / 1000;
    const closedEarly = conns.filter((c) => c.closed).length;
    await closeAll(conns);

    const seen = ids.map(() => new Set());
    const bad = { duplicate: 0, self: 0, unknown_peer: 0, wrong_doc: 0, malformed: 0, text: 0 };
    for (const [i, isBinary, data] of got) {
      if (!isBinary) {
        bad.text++;
        continue;
      }
      let msg;
      try {
        msg = unpack(data);
      } catch {
        bad.malformed++;
        continue;
      }
      // Exactly these three keys: the 4.x client rejects anything else.
      const keys = msg && typeof msg === "object" ? Object.keys(msg).sort().join(",") : "";
      if (msg?.type !== "Introduction" || keys !== "documentIds,peerId,type") {
        bad.malformed++;
        continue;
      }
      if (msg.peerId === ids[i]) bad.self++;
      else if (!idSet.has(msg.peerId)) bad.unknown_peer++;
      else if (seen[i].has(msg.peerId)) bad.duplicate++;
      if (!Array.isArray(msg.documentIds) || msg.documentIds.join() !== doc) bad.wrong_doc++;
      seen[i].add(msg.peerId);
    }
    rounds.push({
      warmup: r < warmupRounds,
      received: count,
      expected,
      elapsed_s: elapsed,
      intros_per_s: count > 0 ? count / elapsed : 0,
      complete,
      closed_early: closedEarly,
      gen_cpu_pct: ((c1 - c0) / (t1 - t0)) * 100,
      bad,
      valid: complete && count === expected && Object.values(bad).every((v) => v === 0),
    });
    await sleep(200); // let the server forget the closed peers before the next round
  }
  const rates = rounds
    .filter((r) => !r.warmup)
    .map((r) => r.intros_per_s)
    .sort((x, y) => x - y);
  return {
    test: "intro",
    peers: n,
    rounds,
    intros_per_s_median: rates[Math.floor(rates.length / 2)],
    intros_per_s_min: rates[0],
    intros_per_s_max: rates[rates.length - 1],
    valid: rounds.every((r) => r.valid),
  };
}

// ---------------------------------------------------------------------------------------------
// idle: open `count` control sockets that each Join a distinct document (so nobody is
// introduced), report {"event":"ready"}, then hold them until stdin says "close" (or ends, or
// `hold_max_s` passes) while the harness reads the server's memory.

//
// With `join_on_open` (the storm and capacity tests), each socket sends its Join as soon as it is
// open, while the others are still connecting: a reconnect storm after a restart, where Joins
// and handshakes compete for the server. A "storm_start" mark comes first (the harness then
// reads the server's CPU time and the clock). `first` numbers the ids from there (several
// generator processes share one run).

async function idle(opts) {
  const connectFn = makeConnector(opts);
  const first = opts.first ?? 0;
  const ids = Array.from({ length: opts.count }, (_, i) => `${opts.prefix}i${first + i}`);
  const joinOf = (i) => pack({ type: "Join", documentIds: [`${opts.prefix}doc${first + i}`] });
  let messages = 0;
  const onmessage = () => {
    messages++;
  };
  let connectOne = connectFn;
  if (opts.join_on_open) {
    let next = 0;
    connectOne = async (path, worker) => {
      const i = next++;
      const c = await connectFn(path, worker);
      c.onmessage = onmessage;
      c.send(joinOf(i), OP_BINARY);
      return c;
    };
    emit({ event: "mark", name: "storm_start" });
  }
  const t0 = now();
  const conns = await openAll(
    connectOne,
    ids.map((id) => `/introduction/${id}`),
    opts.connect_concurrency ?? 64,
  );
  if (!opts.join_on_open) {
    conns.forEach((c, i) => {
      c.onmessage = onmessage;
      c.send(joinOf(i), OP_BINARY);
    });
  }
  const openS = (now() - t0) / 1000;
  emit({ event: "ready", opened: conns.length, open_s: openS });
  const rl = createInterface({ input: process.stdin });
  let timer;
  await new Promise((resolve) => {
    timer = setTimeout(resolve, opts.hold_max_s * 1000);
    rl.on("line", (line) => {
      if (line.trim() === "close") resolve();
    });
    rl.on("close", resolve);
  });
  clearTimeout(timer);
  rl.close();
  const closedByServer = conns.filter((c) => c.closed).length;
  await closeAll(conns, 5000);
  return {
    test: "idle",
    opened: conns.length,
    open_s: openS,
    messages_received: messages,
    closed_by_server: closedByServer,
    valid: messages === 0 && closedByServer === 0,
  };
}

// ---------------------------------------------------------------------------------------------

const TESTS = { pipe, echo, setup, intro, idle };

async function main() {
  const [test, json] = process.argv.slice(2);
  if (!TESTS[test] || !json) {
    console.error(`usage: node loadgen.mjs ${Object.keys(TESTS).join("|")} 'JSON-OPTIONS'`);
    process.exit(2);
  }
  const opts = { host: "127.0.0.1", ...JSON.parse(json) };
  // The whole test is bounded too, whatever happens inside it.
  const hardLimit = setTimeout(() => {
    emit({ event: "error", message: `test ${test} exceeded ${opts.hard_limit_s} s` });
    process.exit(1);
  }, (opts.hard_limit_s ?? 300) * 1000);
  hardLimit.unref();
  try {
    const result = await TESTS[test](opts);
    emit({ event: "result", ...result });
    process.exit(0);
  } catch (err) {
    emit({ event: "error", message: String(err?.stack ?? err) });
    process.exit(1);
  }
}

main();
