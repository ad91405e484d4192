// Runs the reference Local First Relay server (@localfirst/relay 4.2.2, pinned in package.json),
// unchanged, so that the benchmark compares against exactly what npm ships.
//
// Usage: node lf-server.mjs PORT
import { Server } from "@localfirst/relay/Server.js";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: node lf-server.mjs PORT");
  process.exit(2);
}

const server = new Server({ port });
// Server.listen() binds every interface; the benchmark only ever talks over loopback, so bind
// 127.0.0.1 alone. This wraps the express-ws listen() that Server.listen() calls with
// (port, callback); nothing about how the relay handles sockets changes.
const listen = server.app.listen;
server.app.listen = (p, callback) => listen.call(server.app, p, "127.0.0.1", callback);
await server.listen({ silent: true });
console.log(`lf-server ready port=${port} pid=${process.pid}`);

// Exit promptly and quietly when the harness stops us.
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
