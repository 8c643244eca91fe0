// libvirt domain XML: a small reader for what libvirt itself writes (`virsh dumpxml`: elements,
// attributes, text, entities; no DTDs or namespaces needed) and the parts of a domain the driver
// reports. https://libvirt.org/formatdomain.html is the reference for every element used here.
import { ShadowvmError } from "@shadowvm/shared";

export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

const ENTITIES: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|\w+);/g, (whole, ent: string) => {
    if (ent.startsWith("#x")) return String.fromCodePoint(Number.parseInt(ent.slice(2), 16));
    if (ent.startsWith("#")) return String.fromCodePoint(Number.parseInt(ent.slice(1), 10));
    return ENTITIES[ent] ?? whole;
  });
}

export function escapeXml(s: string): string {
  return s.replace(
    /[<>&'"]/g,
    (c) => `&${{ "<": "lt", ">": "gt", "&": "amp", "'": "apos", '"': "quot" }[c]};`,
  );
}

/** Parses one XML document into its root element. Throws on malformed input. */
export function parseXml(text: string): XmlElement {
  const root: XmlElement = { name: "#document", attrs: {}, children: [], text: "" };
  const stack: XmlElement[] = [root];
  const tag = /<(\/?)([\w:.-]+)((?:\s+[\w:.-]+\s*=\s*(?:'[^']*'|"[^"]*"))*)\s*(\/?)>/y;
  const attr = /([\w:.-]+)\s*=\s*(?:'([^']*)'|"([^"]*)")/g;
  let i = 0;
  const fail = (why: string): never => {
    throw new ShadowvmError("libvirt", "bad_xml", `malformed XML from libvirt at offset ${i}: ${why}`);
  };
  while (i < text.length) {
    const lt = text.indexOf("<", i);
    const top = stack.at(-1)!;
    if (lt < 0) {
      top.text += decodeEntities(text.slice(i));
      break;
    }
    if (lt > i) top.text += decodeEntities(text.slice(i, lt));
    i = lt;
    if (text.startsWith("<!--", i)) {
      const end = text.indexOf("-->", i);
      if (end < 0) fail("unterminated comment");
      i = end + 3;
      continue;
    }
    if (text.startsWith("<?", i)) {
      const end = text.indexOf("?>", i);
      if (end < 0) fail("unterminated processing instruction");
      i = end + 2;
      continue;
    }
    if (text.startsWith("<![CDATA[", i)) {
      const end = text.indexOf("]]>", i);
      if (end < 0) fail("unterminated CDATA");
      top.text += text.slice(i + 9, end);
      i = end + 3;
      continue;
    }
    if (text.startsWith("<!", i)) {
      const end = text.indexOf(">", i);
      if (end < 0) fail("unterminated declaration");
      i = end + 1;
      continue;
    }
    tag.lastIndex = i;
    const m = tag.exec(text);
    if (!m) fail("not a tag");
    const [whole, closing, name, attrText, selfClosing] = m!;
    i += whole!.length;
    if (closing) {
      if (top.name !== name) fail(`</${name}> closes <${top.name}>`);
      stack.pop();
      continue;
    }
    const el: XmlElement = { name: name!, attrs: {}, children: [], text: "" };
    for (const a of attrText!.matchAll(attr)) el.attrs[a[1]!] = decodeEntities(a[2] ?? a[3] ?? "");
    top.children.push(el);
    if (!selfClosing) stack.push(el);
  }
  if (stack.length !== 1) fail(`<${stack.at(-1)!.name}> is not closed`);
  const element = root.children[0];
  if (!element) fail("no root element");
  return element!;
}

export function child(el: XmlElement | undefined, name: string): XmlElement | undefined {
  return el?.children.find((c) => c.name === name);
}

export function children(el: XmlElement | undefined, name: string): XmlElement[] {
  return el?.children.filter((c) => c.name === name) ?? [];
}

/** Text of a descendant by path (`"os/type"`), trimmed. */
export function textAt(el: XmlElement | undefined, path: string): string | undefined {
  let cur = el;
  for (const part of path.split("/")) cur = child(cur, part);
  return cur?.text.trim();
}

const UNIT_BYTES: Record<string, number> = {
  b: 1,
  bytes: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
};

/** A libvirt scaled integer (`<memory unit='KiB'>262144</memory>`) in bytes; KiB when no unit. */
export function scaledBytes(el: XmlElement | undefined): number | undefined {
  if (!el) return undefined;
  const n = Number(el.text.trim());
  if (!Number.isFinite(n)) return undefined;
  const unit = (el.attrs["unit"] ?? "KiB").toLowerCase();
  const factor = UNIT_BYTES[unit];
  return factor === undefined ? undefined : n * factor;
}

export interface DomainDisk {
  /** `disk`, `cdrom`, `floppy`, `lun`. */
  device: string;
  /** `file`, `block`, `network`, `volume`, ... */
  type: string;
  /** Host path (file/block), or `protocol://host/name` for network disks; "" for an empty drive. */
  source: string;
  format: string | undefined;
  /** Guest device name, e.g. vda. */
  target: string;
  bus: string | undefined;
  /** libvirt's alias = QEMU's qdev id (e.g. virtio-disk0). */
  alias: string | undefined;
  readOnly: boolean;
  /** The backing chain libvirt knows, top first (files only). */
  backingChain: { source: string; format: string | undefined }[];
}

export interface DomainInterface {
  /** `network`, `bridge`, `ethernet`, `user`, `direct`, `vhostuser`, ... */
  type: string;
  mac: string;
  /** libvirt model (`virtio`, `e1000`, ...). */
  model: string | undefined;
  /** Host-side device (tap/macvtap name), when libvirt created one. */
  targetDev: string | undefined;
  alias: string | undefined;
  /** Where it is plugged in on the host: `{ network: "default" }`, `{ bridge: "br0" }`, ... */
  source: Record<string, string>;
}

export interface DomainDescription {
  name: string;
  uuid: string;
  /** Live domain id (`id='3'`) for a running domain. */
  id: number | undefined;
  /** `kvm`, `qemu`. */
  type: string;
  memoryBytes: number;
  currentMemoryBytes: number | undefined;
  vcpus: number;
  machine: string | undefined;
  emulator: string | undefined;
  disks: DomainDisk[];
  interfaces: DomainInterface[];
}

function sourceOf(el: XmlElement | undefined, type: string): string {
  const src = child(el, "source");
  if (!src) return "";
  if (type === "network") {
    const host = child(src, "host");
    const where = host
      ? `${host.attrs["name"] ?? ""}${host.attrs["port"] ? `:${host.attrs["port"]}` : ""}`
      : "";
    return `${src.attrs["protocol"] ?? "network"}://${where}/${src.attrs["name"] ?? ""}`;
  }
  if (type === "volume") return `${src.attrs["pool"] ?? ""}/${src.attrs["volume"] ?? ""}`;
  return src.attrs["file"] ?? src.attrs["dev"] ?? src.attrs["dir"] ?? src.attrs["name"] ?? "";
}

/** The driver-relevant parts of a domain XML document. */
export function describeDomain(xml: string): DomainDescription {
  const dom = parseXml(xml);
  if (dom.name !== "domain")
    throw new ShadowvmError("libvirt", "bad_xml", `expected a <domain> document, got <${dom.name}>`);
  const devices = child(dom, "devices");
  const vcpu = child(dom, "vcpu");
  const disks: DomainDisk[] = children(devices, "disk").map((d) => {
    const type = d.attrs["type"] ?? "file";
    const backingChain: DomainDisk["backingChain"] = [];
    for (let b = child(d, "backingStore"); b && child(b, "source"); b = child(b, "backingStore")) {
      backingChain.push({
        source: sourceOf(b, b.attrs["type"] ?? "file"),
        format: child(b, "format")?.attrs["type"],
      });
    }
    return {
      device: d.attrs["device"] ?? "disk",
      type,
      source: sourceOf(d, type),
      format: child(d, "driver")?.attrs["type"],
      target: child(d, "target")?.attrs["dev"] ?? "",
      bus: child(d, "target")?.attrs["bus"],
      alias: child(d, "alias")?.attrs["name"],
      readOnly: !!child(d, "readonly") || d.attrs["device"] === "cdrom",
      backingChain,
    };
  });
  const interfaces: DomainInterface[] = children(devices, "interface").map((n) => ({
    type: n.attrs["type"] ?? "",
    mac: (child(n, "mac")?.attrs["address"] ?? "").toLowerCase(),
    model: child(n, "model")?.attrs["type"],
    targetDev: child(n, "target")?.attrs["dev"],
    alias: child(n, "alias")?.attrs["name"],
    source: { ...(child(n, "source")?.attrs ?? {}) },
  }));
  const memoryBytes = scaledBytes(child(dom, "memory"));
  if (memoryBytes === undefined)
    throw new ShadowvmError("libvirt", "bad_xml", "domain XML has no readable <memory> element");
  const id = dom.attrs["id"];
  return {
    name: textAt(dom, "name") ?? "",
    uuid: (textAt(dom, "uuid") ?? "").toLowerCase(),
    id: id !== undefined && id !== "-1" ? Number(id) : undefined,
    type: dom.attrs["type"] ?? "",
    memoryBytes,
    currentMemoryBytes: scaledBytes(child(dom, "currentMemory")),
    vcpus: Number(vcpu?.attrs["current"] ?? vcpu?.text.trim() ?? 1),
    machine: child(child(dom, "os"), "type")?.attrs["machine"],
    emulator: textAt(dom, "devices/emulator"),
    disks,
    interfaces,
  };
}

/** QEMU device model of a libvirt NIC model on a PCI machine (used when QOM cannot be read). */
export function qemuNicModel(libvirtModel: string | undefined): string {
  switch (libvirtModel) {
    case undefined:
    case "":
      return "rtl8139";
    case "virtio":
    case "virtio-transitional":
    case "virtio-non-transitional":
      return "virtio-net-pci";
    default:
      return libvirtModel;
  }
}

/** QEMU backend (`-netdev` type) libvirt uses for an interface type. */
export function qemuNetdevType(interfaceType: string): string | undefined {
  switch (interfaceType) {
    case "network":
    case "bridge":
    case "ethernet":
    case "direct":
      return "tap";
    case "user":
      return "user";
    case "vhostuser":
      return "vhost-user";
    case "vdpa":
      return "vhost-vdpa";
    case "hostdev":
      return undefined;
    default:
      return interfaceType || undefined;
  }
}
