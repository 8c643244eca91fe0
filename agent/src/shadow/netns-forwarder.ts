// Runs inside a shadow's network namespace (started by netns.ts through `ip netns exec`):
// accepts connections on a unix socket in the shadow's directory and connects each one to the
// guest's service over the namespace's tap. It listens on no network address, so it opens no way
// out of the namespace. It is killed with the namespace at teardown (and reaped with it after an
// agent crash: the registry records its pid).
//   node netns-forwarder.js <unix socket> <guest ip> <guest port>
import { rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";

const [socketPath, guestIp, port] = process.argv.slice(2);
if (!socketPath || !guestIp || !port) {
  process.stderr.write("usage: netns-forwarder.js <unix socket> <guest ip> <guest port>\n");
  process.exit(2);
}
rmSync(socketPath, { force: true });
const server = createServer((client) => {
  const upstream = createConnection({ host: guestIp, port: Number(port) });
  const drop = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", drop);
  upstream.on("error", drop);
  client.on("close", drop);
  upstream.on("close", drop);
  client.pipe(upstream);
  upstream.pipe(client);
});
server.on("error", (err) => {
  process.stderr.write(`netns-forwarder: ${err.message}\n`);
  process.exit(1);
});
server.listen(socketPath);
for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => process.exit(0));
