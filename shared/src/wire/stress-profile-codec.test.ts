import { test } from "uvu";
import * as assert from "uvu/assert";
import { schema } from "../../generated/shadowvm-schema.js";
import {
  FAULT_KINDS,
  type StressProfile,
  StressProfileError,
  stressProfileFromJson,
  stressProfileToJson,
} from "../stress-profile.js";
import { decodeFrame, encodeFrame } from "./frame.js";
import { shadowvm } from "./index.js";
import {
  faultKindFromProto,
  faultKindToProto,
  stressProfileFromProto,
  stressProfileToProto,
} from "./stress-profile-codec.js";

const profile: StressProfile = {
  cpu_load: 1.75,
  memory_load: 0.9,
  io_load: 0,
  net_latency_ms: 250,
  net_loss_pct: 12.5,
  faults: [
    { kind: "clock_jump", rate: 0.5, at_s: 0, duration_s: 1 },
    { kind: "process_kill", rate: 1, at_s: 45 },
  ],
  duration_s: 300,
};

function profileError(value: unknown): StressProfileError {
  try {
    stressProfileFromJson(value);
  } catch (err) {
    if (err instanceof StressProfileError) return err;
    throw err;
  }
  throw new Error(`accepted ${JSON.stringify(value)}`);
}

test("JSON -> proto -> frame -> proto -> JSON gives the same profile", () => {
  const message = stressProfileToProto(profile);
  assert.ok(message instanceof shadowvm.v1.StressProfile);
  const bytes = encodeFrame({ agent_id: "a", shadow_run: { id: "r", profile: message } });
  const decoded = decodeFrame(bytes).shadow_run?.profile;
  assert.ok(decoded);
  assert.equal(stressProfileFromProto(decoded), profile);
  // And through actual JSON text.
  assert.equal(stressProfileFromJson(JSON.stringify(stressProfileToJson(profile))), profile);
});

test("every fault kind maps to its own FaultKind value and back", () => {
  const numbers = FAULT_KINDS.map(faultKindToProto);
  assert.is(new Set(numbers).size, FAULT_KINDS.length);
  for (const kind of FAULT_KINDS) assert.is(faultKindFromProto(faultKindToProto(kind)), kind);
  assert.is(faultKindFromProto(0), undefined);
  // The enum has exactly the TS kinds plus UNSPECIFIED: a kind added on one side only fails here.
  const enumValues = Object.values(schema.enums["shadowvm.v1.FaultKind"] ?? {}).sort();
  assert.equal(enumValues, [0, ...numbers].sort());
});

test("the StressProfile message has exactly the interface's fields", () => {
  const fields = (schema.messages["shadowvm.v1.StressProfile"]?.fields ?? []).map((f) => f.name).sort();
  assert.equal(fields, Object.keys(profile).sort());
  const faultFields = (schema.messages["shadowvm.v1.Fault"]?.fields ?? []).map((f) => f.name).sort();
  assert.equal(faultFields, Object.keys(profile.faults[0] ?? {}).sort());
  assert.is(
    schema.messages["shadowvm.v1.Fault"]?.fields.find((f) => f.name === "duration_s")?.rule,
    "optional",
  );
});

test("a fault without duration_s stays without one through the wire", () => {
  const only: StressProfile = { ...profile, faults: [{ kind: "nmi", rate: 1, at_s: 5 }] };
  const bytes = encodeFrame({ agent_id: "a", shadow_run: { profile: stressProfileToProto(only) } });
  const fault = stressProfileFromProto(decodeFrame(bytes).shadow_run?.profile ?? {}).faults[0];
  assert.equal(fault, { kind: "nmi", rate: 1, at_s: 5 });
  assert.not.ok(fault && "duration_s" in fault);
});

test("stressProfileToJson is canonical: known keys only, in the specification's order", () => {
  const shuffled = {
    duration_s: 60,
    faults: [{ at_s: 1, rate: 0.5, kind: "disk_fill", duration_s: null }],
    net_loss_pct: 0,
    net_latency_ms: 0,
    io_load: 1,
    memory_load: 0.5,
    cpu_load: 1,
  };
  const json = stressProfileToJson(stressProfileFromJson(shuffled));
  assert.is(
    JSON.stringify(json),
    '{"cpu_load":1,"memory_load":0.5,"io_load":1,"net_latency_ms":0,"net_loss_pct":0,"faults":[{"kind":"disk_fill","rate":0.5,"at_s":1}],"duration_s":60}',
  );
});

test("faults may be left out; everything else is required", () => {
  const { faults: _faults, ...rest } = profile;
  assert.equal(stressProfileFromJson(rest).faults, []);
  const { duration_s: _d, ...noDuration } = profile;
  assert.is(
    profileError(noDuration).message,
    "stress profile: duration_s must be a number > 0 (actual: missing)",
  );
});

test("errors name the key, the expected value and the actual value", () => {
  const cases: [unknown, string, string][] = [
    [
      { ...profile, cpu_load: "high" },
      "cpu_load",
      'stress profile: cpu_load must be a number >= 0 (actual: "high")',
    ],
    [
      { ...profile, memory_load: 1.5 },
      "memory_load",
      "stress profile: memory_load must be a number in [0, 1] (actual: 1.5)",
    ],
    [
      { ...profile, io_load: Number.NaN },
      "io_load",
      "stress profile: io_load must be a number >= 0 (actual: NaN)",
    ],
    [
      { ...profile, net_loss_pct: 101 },
      "net_loss_pct",
      "stress profile: net_loss_pct must be a number in [0, 100] (actual: 101)",
    ],
    [
      { ...profile, duration_s: 0 },
      "duration_s",
      "stress profile: duration_s must be a number > 0 (actual: 0)",
    ],
    [
      { ...profile, faults: [{ kind: "cpu_burn", rate: 1, at_s: 0 }] },
      "faults[0].kind",
      `stress profile: faults[0].kind must be one of ${FAULT_KINDS.join(", ")} (actual: "cpu_burn")`,
    ],
    [
      { ...profile, faults: [{ kind: "nmi", rate: 2, at_s: 0 }] },
      "faults[0].rate",
      "stress profile: faults[0].rate must be a number in [0, 1] (actual: 2)",
    ],
    [
      { ...profile, faults: [{ kind: "nmi", rate: 1, at_s: 0, duration_s: -1 }] },
      "faults[0].duration_s",
      "stress profile: faults[0].duration_s must be a number > 0 (actual: -1)",
    ],
    [
      { ...profile, faults: "none" },
      "faults",
      'stress profile: faults must be an array of at most 64 faults (actual: "none")',
    ],
    [
      { ...profile, cpu: 1 },
      "cpu",
      `stress profile: unknown key "cpu" (allowed: cpu_load, memory_load, io_load, net_latency_ms, net_loss_pct, faults, duration_s)`,
    ],
    [
      { ...profile, faults: [{ kind: "nmi", rate: 1, at_s: 0, when: 3 }] },
      "faults[0].when",
      'stress profile: unknown key "faults[0].when" (allowed: kind, rate, at_s, duration_s)',
    ],
    [[1, 2], "", "stress profile: the profile must be an object (actual: an array of 2)"],
    [null, "", "stress profile: the profile must be an object (actual: null)"],
  ];
  for (const [value, key, message] of cases) {
    const err = profileError(value);
    assert.is(err.message, message);
    assert.is(err.key, key);
  }
  assert.match(profileError("{not json").message, /^stress profile: not valid JSON \(/);
});

test("stressProfileFromProto lists the allowed kinds for an unknown FaultKind number", () => {
  try {
    stressProfileFromProto({ duration_s: 10, faults: [{ kind: 77 as shadowvm.v1.FaultKind, rate: 1 }] });
    assert.unreachable("accepted an unknown fault kind");
  } catch (err) {
    assert.instance(err, StressProfileError);
    assert.match(
      (err as Error).message,
      /^stress profile: faults\[0\]\.kind must be one of disk_io_error \(FAULT_KIND_DISK_IO_ERROR = 1\), .*clock_jump \(FAULT_KIND_CLOCK_JUMP = 7\) \(actual: 77\)$/,
    );
  }
});

test("stressProfileToProto refuses an invalid profile", () => {
  assert.throws(
    () => stressProfileToProto({ ...profile, memory_load: -0.1 }),
    /memory_load must be a number in \[0, 1\]/,
  );
});

test.run();
