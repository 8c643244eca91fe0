// Builds a shadow's QEMU command line from the production VM's captured one.
//
// Migration needs an identical machine (machine type, CPU, RAM, devices and their ids), so the
// shadow keeps every option except those that would touch production or the outside world:
//   disks       every captured disk's block graph is replaced by a qcow2 overlay in the shadow's
//               directory, backed by the restored frozen images (production's files are never
//               opened, the captured images are never written); every layer gets a node name
//               (<node>-svm-file, <node>-svm-base) so fault layers can be slid in at run time;
//   network     every backend becomes isolated user-mode networking (`restrict=on`: the guest
//               reaches nothing) with a loopback port forward for the service probe, or a tap
//               (<prefix><n>) in the shadow's own network namespace, where a production backend
//               that was user-mode also gets an unconnected restricted slirp instance to load its
//               migration state into; ids and MACs stay so the device model matches;
//   monitors    production's QMP/HMP monitors are dropped, the shadow gets its own QMP socket
//               (and optionally a second one the agent keeps open);
//   chardevs    a serial port logs to the shadow's console file, guest-agent ports become sockets
//               in the shadow's directory, anything else becomes `null`;
//   display     none; daemonize/pidfile/runas/chroot/logging are dropped or redirected;
//   start       `-incoming defer`: memory comes from the capture, then `cont`.
// Options whose resources cannot be reproduced (file descriptors inherited from a management
// layer: `fd=`, `/dev/fdset/`) are refused with a clear error naming the option.
import { ShadowvmError } from "@shadowvm/shared";

/** QEMU options that take no argument (everything else takes exactly one). */
const FLAG_OPTIONS = new Set([
  "-S",
  "-nodefaults",
  "-no-user-config",
  "-daemonize",
  "-nographic",
  "-enable-kvm",
  "-no-reboot",
  "-no-shutdown",
  "-snapshot",
  "-no-hpet",
  "-no-acpi",
  "-full-screen",
  "-alt-grab",
  "-ctrl-grab",
  "-no-quit",
  "-no-frame",
  "-preconfig",
  "-no-fd-bootchk",
  "-win2k-hack",
  "-rtc-td-hack",
  "-usb",
  "-s",
  "-only-migratable",
  "-enable-sync-profile",
  "-nodefconfig",
  "-no-kvm",
  "-old-param",
  "-semihosting",
  "-version",
  "-h",
  "-help",
]);

/** Options dropped outright from a shadow. */
const DROPPED = new Set([
  "-qmp",
  "-qmp-pretty",
  "-monitor",
  "-mon",
  "-daemonize",
  "-pidfile",
  "-runas",
  "-chroot",
  "-D",
  "-d",
  "-trace",
  "-vnc",
  "-spice",
  "-display",
  "-nographic",
  "-incoming",
  "-S",
  "-loadvm",
  "-serial",
  "-parallel",
  "-snapshot",
  "-sandbox",
  "-msg",
  "-run-with",
  "-add-fd",
  "-qtest",
  "-gdb",
  "-s",
]);

export type NetworkIsolation =
  | { mode: "user"; forwards: { hostPort: number; guestPort: number; guestIp?: string }[]; subnet?: string }
  /**
   * Taps named `<tapPrefix><n>` (n = 0, 1, ... per network backend), created beforehand inside
   * the shadow's own network namespace, where QEMU runs too.
   */
  | { mode: "netns"; tapPrefix: string };

export interface ShadowDisk {
  /** Root node (what the guest device's drive= names) in production. */
  node: string;
  /** Production's top image file of that disk (how a -drive is matched). */
  productionFile: string;
  /** The shadow's qcow2 overlay on the restored frozen image. */
  overlay: string;
  /**
   * The restored frozen image under the overlay. Given, it is opened explicitly (read-only, with
   * a node name); without it QEMU opens the backing file named in the overlay's header.
   */
  backing?: { file: string; format: string };
}

export interface ShadowCommandLineInput {
  /** Production's argv, binary included (as read from /proc/<pid>/cmdline at capture time). */
  productionArgv: string[];
  shadowName: string;
  disks: ShadowDisk[];
  qmpSocket: string;
  consoleLog: string;
  /** Directory for the shadow's sockets (guest channels). */
  socketDir: string;
  network: NetworkIsolation;
  /** A second QMP monitor (the agent's own, held open for the shadow's life). */
  agentQmpSocket?: string;
}

/** Node names of a captured disk in the shadow (for fault layers and throttling). */
export interface ShadowDiskNodes {
  /** The overlay's format node (production's root node name). */
  node: string;
  /** The overlay's protocol (file) node. */
  fileNode: string;
  /** The restored frozen image under the overlay (read-only). */
  backingNode: string;
}

export interface ShadowCommandLine {
  binary: string;
  args: string[];
  /** Host-side sockets the shadow's guest-agent ports listen on, by port name. */
  guestChannels: Record<string, string>;
  /** Disks replaced as -blockdev graphs, with the node names given to their layers. */
  disks: ShadowDiskNodes[];
  /** netns mode: the tap names QEMU expects (index = network backend), and each one's original backend type. */
  taps: { name: string; id: string; originalType: string | undefined }[];
}

type KeyVal = { head: string | undefined; props: Map<string, string> };

/** Parses QEMU's `driver,key=value,...` syntax (",," is a literal comma). */
export function parseKeyVal(text: string, implicitKey?: string): KeyVal {
  const parts: string[] = [];
  let cur = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "," && text[i + 1] === ",") {
      cur += ",";
      i++;
    } else if (c === ",") {
      parts.push(cur);
      cur = "";
    } else cur += c;
  }
  parts.push(cur);
  const props = new Map<string, string>();
  let head: string | undefined;
  parts.forEach((p, i) => {
    const eq = p.indexOf("=");
    if (eq < 0 && i === 0) {
      head = p;
      if (implicitKey) props.set(implicitKey, p);
    } else if (eq < 0) props.set(p, "on");
    else props.set(p.slice(0, eq), p.slice(eq + 1));
  });
  return { head, props };
}

export function formatKeyVal(head: string | undefined, props: Map<string, string>, skipKey?: string): string {
  const esc = (s: string) => s.replaceAll(",", ",,");
  const items = [...props].filter(([k]) => k !== skipKey).map(([k, v]) => `${k}=${esc(v)}`);
  return [head === undefined ? undefined : esc(head), ...items].filter((x) => x !== undefined).join(",");
}

/** Splits argv into [option, value] pairs. */
export function splitOptions(argv: string[]): { opt: string; value: string | undefined }[] {
  const out: { opt: string; value: string | undefined }[] = [];
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i]!;
    const opt = raw.startsWith("--") ? raw.slice(1) : raw;
    if (!opt.startsWith("-"))
      throw new ShadowvmError(
        "shadow",
        "unsupported",
        `unexpected argument ${JSON.stringify(raw)} in the production command line`,
      );
    if (FLAG_OPTIONS.has(opt)) out.push({ opt, value: undefined });
    else {
      const value = argv[i + 1];
      if (value === undefined)
        throw new ShadowvmError(
          "shadow",
          "unsupported",
          `option ${opt} has no value in the production command line`,
        );
      out.push({ opt, value });
      i++;
    }
  }
  return out;
}

interface BlockdevDef {
  index: number;
  nodeName: string | undefined;
  /** Node names this definition references (file=, backing=, ...). */
  refs: string[];
}

function blockdevDef(value: string, index: number): BlockdevDef {
  if (value.trimStart().startsWith("{")) {
    const json = JSON.parse(value) as Record<string, unknown>;
    const refs: string[] = [];
    const names: string[] = [];
    const walk = (o: Record<string, unknown>) => {
      if (typeof o["node-name"] === "string") names.push(o["node-name"]);
      for (const [k, v] of Object.entries(o)) {
        if (typeof v === "string" && ["file", "backing", "image", "data-file", "test"].includes(k))
          refs.push(v);
        else if (v && typeof v === "object") walk(v as Record<string, unknown>);
      }
    };
    walk(json);
    return { index, nodeName: json["node-name"] as string | undefined, refs: [...refs, ...names.slice(1)] };
  }
  const { props } = parseKeyVal(value);
  const refs = ["file", "backing", "image", "data-file"]
    .map((k) => props.get(k))
    .filter((v): v is string => !!v && v !== "null");
  return { index, nodeName: props.get("node-name"), refs };
}

function isolatedNetdev(id: string, net: NetworkIsolation, first: boolean, tapIndex: number): string {
  if (net.mode === "netns") return `tap,id=${id},ifname=${net.tapPrefix}${tapIndex},script=no,downscript=no`;
  const opts = [`user`, `id=${id}`, "restrict=on"];
  if (net.subnet) opts.push(`net=${net.subnet}`);
  if (first) {
    for (const f of net.forwards)
      opts.push(`hostfwd=tcp:127.0.0.1:${f.hostPort}-${f.guestIp ?? ""}:${f.guestPort}`);
  }
  return opts.join(",");
}

function refusesFds(opt: string, value: string): void {
  if (/(^|,)fd=\d|fds=|\/dev\/fdset\//.test(value)) {
    throw new ShadowvmError(
      "shadow",
      "unsupported",
      `production option ${opt} ${value.slice(0, 120)} uses a file descriptor inherited from its management layer, which a shadow cannot reproduce; use the driver of that layer (e.g. libvirt)`,
    );
  }
}

export function buildShadowCommandLine(input: ShadowCommandLineInput): ShadowCommandLine {
  const [binary, ...rest] = input.productionArgv;
  if (!binary)
    throw new ShadowvmError(
      "shadow",
      "unsupported",
      "the capture has no QEMU command line (was the QEMU process visible to the agent?)",
    );
  const options = splitOptions(rest);
  const guestChannels: Record<string, string> = {};

  // Chardev usage decides what each chardev becomes.
  const chardevRole = new Map<string, "serial" | "channel" | "monitor">();
  const channelName = new Map<string, string>();
  for (const { opt, value } of options) {
    if (!value) continue;
    if (opt === "-mon") {
      const c = parseKeyVal(value).props.get("chardev");
      if (c) chardevRole.set(c, "monitor");
    }
    if (opt === "-device") {
      const { head, props } = parseKeyVal(value);
      const c = props.get("chardev");
      if (!c) continue;
      if (head === "isa-serial" || head === "pci-serial" || head === "virtconsole")
        chardevRole.set(c, "serial");
      else if (head === "virtserialport") {
        chardevRole.set(c, "channel");
        channelName.set(c, props.get("name") ?? c);
      }
    }
  }

  // Block nodes that belong to captured disks are replaced as a whole graph.
  const defs = options.map((o, i) =>
    o.opt === "-blockdev" && o.value ? blockdevDef(o.value, i) : undefined,
  );
  const byName = new Map<string, BlockdevDef>();
  for (const d of defs) if (d?.nodeName) byName.set(d.nodeName, d);
  const replacedIndexes = new Set<number>();
  const replacedRoots = new Set<string>();
  for (const disk of input.disks) {
    const root = byName.get(disk.node);
    if (!root) continue;
    replacedRoots.add(disk.node);
    const stack = [root];
    while (stack.length) {
      const d = stack.pop()!;
      if (replacedIndexes.has(d.index)) continue;
      replacedIndexes.add(d.index);
      for (const r of d.refs) {
        const child = byName.get(r);
        if (child) stack.push(child);
      }
    }
  }

  const args: string[] = [];
  const taps: ShadowCommandLine["taps"] = [];
  /** Production backends that were user-mode: their migration state needs a slirp instance to land in. */
  let slirpStates = 0;
  let firstNetdev = true;
  const netdev = (id: string, originalType: string | undefined): string => {
    const text = isolatedNetdev(id, input.network, firstNetdev, taps.length);
    if (input.network.mode === "netns") {
      taps.push({ name: `${input.network.tapPrefix}${taps.length}`, id, originalType });
      if (originalType === "user") slirpStates++;
    }
    firstNetdev = false;
    return text;
  };
  let serialDone = false;
  for (const [i, { opt, value }] of options.entries()) {
    if (replacedIndexes.has(i)) continue;
    if (DROPPED.has(opt)) {
      if (opt === "-serial" && !serialDone && value !== "none") {
        args.push("-serial", `file:${input.consoleLog}`);
        serialDone = true;
      }
      continue;
    }
    if (value === undefined) {
      args.push(opt);
      continue;
    }
    switch (opt) {
      case "-name": {
        args.push("-name", `${input.shadowName},process=shadow-${input.shadowName}`);
        break;
      }
      case "-chardev": {
        const { head, props } = parseKeyVal(value);
        const id = props.get("id") ?? "";
        const role = chardevRole.get(id);
        if (role === "monitor") break;
        if (role === "serial" && !serialDone) {
          args.push("-chardev", `file,id=${id},path=${input.consoleLog.replaceAll(",", ",,")}`);
          serialDone = true;
        } else if (role === "channel") {
          const path = `${input.socketDir}/${id}.sock`;
          guestChannels[channelName.get(id) ?? id] = path;
          args.push("-chardev", `socket,id=${id},path=${path.replaceAll(",", ",,")},server=on,wait=off`);
        } else {
          void head;
          args.push("-chardev", `null,id=${id}`);
        }
        break;
      }
      case "-netdev": {
        const { head, props } = parseKeyVal(value, "type");
        args.push("-netdev", netdev(props.get("id") ?? "net0", props.get("type") ?? head));
        break;
      }
      case "-nic":
      case "-net": {
        const kv = parseKeyVal(value);
        if (kv.head === "nic") args.push(opt, value);
        else {
          const id = kv.props.get("id") ?? kv.props.get("netdev") ?? `shadownet${i}`;
          const model = kv.props.get("model");
          if (opt === "-nic")
            args.push(
              "-nic",
              `${netdev(id, kv.head)}${model ? `,model=${model}` : ""}${kv.props.get("mac") ? `,mac=${kv.props.get("mac")}` : ""}`,
            );
          else args.push("-net", netdev(id, kv.head));
        }
        break;
      }
      case "-drive": {
        const { head, props } = parseKeyVal(value, "file");
        const file = props.get("file");
        const disk = input.disks.find((d) => d.productionFile === file);
        if (disk) {
          props.set("file", disk.overlay);
          props.set("format", "qcow2");
          args.push("-drive", formatKeyVal(undefined, props));
        } else {
          refusesFds(opt, value);
          const readOnly =
            props.get("readonly") === "on" ||
            props.get("media") === "cdrom" ||
            props.get("read-only") === "on";
          if (!readOnly && file) {
            throw new ShadowvmError(
              "shadow",
              "unsupported",
              `writable drive ${file} is not in the capture; a shadow must never open a production disk writable`,
            );
          }
          args.push(
            "-drive",
            head !== undefined && !props.has("file") ? value : formatKeyVal(undefined, props),
          );
        }
        break;
      }
      case "-object": {
        const { head, props } = parseKeyVal(value);
        const qomType = head ?? props.get("qom-type");
        if (qomType === "memory-backend-file" || qomType === "memory-backend-memfd") {
          // Same RAM block id, private anonymous memory: never production's shared backing file.
          const keep = new Map(
            [...props].filter(([k]) => ["id", "size", "host-nodes", "policy"].includes(k)),
          );
          args.push("-object", formatKeyVal("memory-backend-ram", keep, "qom-type"));
        } else {
          refusesFds(opt, value);
          args.push("-object", value);
        }
        break;
      }
      default:
        refusesFds(opt, value);
        args.push(opt, value);
    }
  }

  const diskNodes: ShadowDiskNodes[] = [];
  for (const disk of input.disks) {
    if (!replacedRoots.has(disk.node)) continue;
    // Every layer is named so that a fault layer (blkdebug) can be slid in under the overlay at
    // run time (blockdev-reopen needs the names). The restored frozen image is opened read-only
    // as the overlay's backing; its own backing chain comes from its header, read-only too.
    const nodes: ShadowDiskNodes = {
      node: disk.node,
      fileNode: `${disk.node}-svm-file`,
      backingNode: `${disk.node}-svm-base`,
    };
    diskNodes.push(nodes);
    const backing =
      disk.backing === undefined
        ? undefined
        : {
            driver: disk.backing.format,
            "node-name": nodes.backingNode,
            "read-only": true,
            file: {
              driver: "file",
              "node-name": `${nodes.backingNode}-file`,
              filename: disk.backing.file,
              "read-only": true,
            },
          };
    args.push(
      "-blockdev",
      JSON.stringify({
        driver: "qcow2",
        "node-name": disk.node,
        file: { driver: "file", "node-name": nodes.fileNode, filename: disk.overlay },
        ...(backing ? { backing } : {}),
      }),
    );
  }
  // A production backend in user mode carries slirp state in the migration stream; in netns mode
  // it lands in an unconnected slirp instance that reaches nothing (restrict=on, no NIC).
  for (let i = 0; i < slirpStates; i++) args.push("-netdev", `user,id=svm-slirp-state${i},restrict=on`);
  if (!serialDone) args.push("-serial", `file:${input.consoleLog}`);
  if (input.agentQmpSocket) args.push("-qmp", `unix:${input.agentQmpSocket},server=on,wait=off`);
  args.push(
    "-qmp",
    `unix:${input.qmpSocket},server=on,wait=off`,
    "-display",
    "none",
    // Keep a panicked shadow as it is (its console holds the report) instead of rebooting it.
    "-action",
    "panic=pause",
    "-incoming",
    "defer",
  );
  return { binary, args, guestChannels, disks: diskNodes, taps };
}
