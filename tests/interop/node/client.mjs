// Why this exists: it proves the Python pcbook server speaks the tutorial's wire contract, not just
// "whatever grpcio generated": a Node.js client built from nothing but proto/ (no Python, no stubs)
// runs every RPC kind against it, over plaintext and mutual TLS. tests/interop/test_node_client.py runs it.
//
// Usage: node client.mjs HOST:PORT [--tls --ca ca-cert.pem [--cert client-cert.pem --key client-key.pem]]
// Prints one JSON object per line, {"step": ..., "ok": bool, ...}; exits 1 if any step was unexpected.

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "proto");
const DEADLINE_MS = 5000;
const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, num]) => [num, name]));

// ---------------------------------------------------------------------------------------------
// Command line, protos, channel

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    tls: { type: "boolean", default: false },
    ca: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
  },
});
if (positionals.length !== 1) {
  console.error("usage: node client.mjs HOST:PORT [--tls --ca FILE [--cert FILE --key FILE]]");
  process.exit(2);
}
const address = positionals[0];

const packageDefinition = protoLoader.loadSync(["auth_service.proto", "laptop_service.proto"], {
  includeDirs: [PROTO_DIR],
  keepCase: true, // field names as in the .proto files (laptop_id, not laptopId)
  longs: String, // uint64 Memory.value arrives as a decimal string: no precision loss
  enums: String,
  defaults: true, // proto3 zero values are present, as in every other language
  oneofs: true, // a virtual field names the set member of each oneof (weight, data)
});
const pb = grpc.loadPackageDefinition(packageDefinition).techschool_pcbook;

/** Plaintext; or TLS trusting --ca, showing the client certificate --cert/--key when given (mutual TLS). */
function credentials() {
  if (!opts.tls) return grpc.credentials.createInsecure();
  if (!opts.ca || !opts.cert !== !opts.key) {
    console.error("--tls needs --ca, and --cert with --key for mutual TLS");
    process.exit(2);
  }
  const read = (path) => (path ? readFileSync(path) : null);
  return grpc.credentials.createSsl(read(opts.ca), read(opts.key), read(opts.cert));
}

const creds = credentials();
const authClient = new pb.AuthService(address, creds);
const laptopClient = new pb.LaptopService(address, creds);

// ---------------------------------------------------------------------------------------------
// Results

let failures = 0;

/** Print one result line; `ok` is whether it was what the scenario expects. */
function report(step, ok, fields = {}) {
  if (!ok) failures += 1;
  console.log(JSON.stringify({ step, ok, ...fields }));
}

function codeName(err) {
  return CODE_NAMES[err.code] ?? String(err.code);
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

function withToken(token) {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set("authorization", token); // raw, no "Bearer", as the Go client does
  return md;
}

/** A unary call as a promise of {code, details, response}: errors are results here, not throws. */
function unary(client, method, request, metadata = new grpc.Metadata()) {
  return new Promise((resolve) => {
    client[method](request, metadata, { deadline: deadline() }, (err, response) => {
      if (err) resolve({ code: codeName(err), details: err.details, response: null });
      else resolve({ code: "OK", details: "", response });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The laptop this client makes (the lecture's sample generator, fixed values)

const LAPTOP_PRICE = 1234.5; // no other laptop in a fresh server costs exactly this

function newLaptop(id) {
  return {
    id,
    brand: "Lenovo",
    name: "Thinkpad X1 (node interop)",
    cpu: { brand: "AMD", name: "Ryzen 7 PRO 2700U", number_cores: 6, number_threads: 12, min_ghz: 2.5, max_ghz: 4.5 },
    ram: { value: "16", unit: "GIGABYTE" },
    gpus: [{ brand: "NVIDIA", name: "RTX 2070", min_ghz: 1.2, max_ghz: 1.8, memory: { value: "4", unit: "GIGABYTE" } }],
    storages: [
      { driver: "SSD", memory: { value: "512", unit: "GIGABYTE" } },
      { driver: "HDD", memory: { value: "2", unit: "TERABYTE" } },
    ],
    screen: { size_inch: 14, resolution: { width: 1920, height: 1080 }, panel: "IPS", multitouch: false },
    keyboard: { layout: "QWERTY", backlit: true },
    weight_kg: 1.75,
    price_usd: LAPTOP_PRICE,
    release_year: 2019,
    updated_at: { seconds: String(Math.floor(Date.now() / 1000)), nanos: 0 },
  };
}

/** JSON with sorted keys, so that two messages compare by content, not by field order. */
function canonical(value) {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
      : v,
  );
}

/** The fields of laptop `got` that differ from what was sent (the id aside); [] when it round-tripped. */
function changedFields(got, sent) {
  const names = new Set([...Object.keys(got), ...Object.keys(sent)]);
  names.delete("id");
  names.delete("weight"); // the oneof's virtual field: only on the decoded side
  const changed = [...names].filter((k) => canonical(got[k]) !== canonical(sent[k]));
  if (got.weight !== "weight_kg") changed.push("weight");
  return changed;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function jwtClaims(token) {
  const parts = token.split(".");
  const header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
  const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
  return { alg: header.alg, ...claims };
}

// ---------------------------------------------------------------------------------------------
// Steps

async function login(username, password) {
  const r = await unary(authClient, "Login", { username, password });
  return { ...r, token: r.response?.access_token };
}

async function createLaptop(laptop, token) {
  const r = await unary(laptopClient, "CreateLaptop", { laptop }, withToken(token));
  return { ...r, id: r.response?.id };
}

function searchLaptops(filter) {
  return new Promise((resolve) => {
    const found = [];
    const call = laptopClient.SearchLaptop({ filter }, new grpc.Metadata(), { deadline: deadline() });
    call.on("data", (res) => found.push(res.laptop));
    call.on("error", (err) => resolve({ code: codeName(err), details: err.details, found }));
    call.on("end", () => resolve({ code: "OK", details: "", found }));
  });
}

function uploadImage(token, laptopId, imageType, image, chunkSize) {
  return new Promise((resolve) => {
    let chunks = 0;
    const call = laptopClient.UploadImage(withToken(token), { deadline: deadline() }, (err, res) => {
      if (err) resolve({ code: codeName(err), details: err.details, chunks });
      else resolve({ code: "OK", details: "", id: res.id, size: res.size, chunks });
    });
    call.write({ info: { laptop_id: laptopId, image_type: imageType } });
    for (let off = 0; off < image.length; off += chunkSize) {
      call.write({ chunk_data: image.subarray(off, off + chunkSize) });
      chunks += 1;
    }
    call.end();
  });
}

/** Bidi: sends each score only after the answer to the previous one, like a user typing. */
function rateLaptop(token, laptopId, scores) {
  return new Promise((resolve) => {
    const answers = [];
    const call = laptopClient.RateLaptop(withToken(token), { deadline: deadline() });
    const next = () => {
      if (answers.length < scores.length) call.write({ laptop_id: laptopId, score: scores[answers.length] });
      else call.end();
    };
    call.on("data", (res) => {
      answers.push(res);
      next();
    });
    call.on("error", (err) => resolve({ code: codeName(err), details: err.details, answers }));
    call.on("end", () => resolve({ code: "OK", details: "", answers }));
    next();
  });
}

/** A deterministic small "image": a PNG signature followed by patterned bytes. */
function sampleImage(size) {
  const img = Buffer.alloc(size);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(img);
  for (let i = 8; i < size; i++) img[i] = (i * 31) & 0xff;
  return img;
}

// ---------------------------------------------------------------------------------------------
// The scenario

async function main() {
  // Auth
  const admin = await login("admin1", "secret");
  const adminClaims = admin.token ? jwtClaims(admin.token) : {};
  report("login_admin", admin.code === "OK" && !!admin.token, {
    code: admin.code,
    details: admin.details,
    token_parts: admin.token?.split(".").length ?? 0,
    alg: adminClaims.alg,
    username: adminClaims.username,
    role: adminClaims.role,
    lifetime_s: adminClaims.exp !== undefined ? adminClaims.exp - Math.floor(Date.now() / 1000) : null,
  });
  if (!admin.token) return; // nothing else can work

  const user = await login("user1", "secret");
  report("login_user", user.code === "OK" && !!user.token, {
    code: user.code,
    details: user.details,
    role: user.token ? jwtClaims(user.token).role : null,
  });

  const wrong = await login("admin1", "not-the-password");
  report("login_wrong_password", wrong.code === "NOT_FOUND", { code: wrong.code, details: wrong.details });

  // CreateLaptop
  const created = [];
  const sent = {}; // id -> the laptop as sent
  const first = newLaptop("");
  const serverMade = await createLaptop(first, admin.token);
  report("create_empty_id", serverMade.code === "OK" && UUID_RE.test(serverMade.id ?? ""), {
    code: serverMade.code,
    details: serverMade.details,
    id: serverMade.id,
  });
  if (serverMade.id) {
    created.push(serverMade.id);
    sent[serverMade.id] = first;
  }

  const fixedId = randomUUID();
  const second = newLaptop(fixedId);
  const fixed = await createLaptop(second, admin.token);
  report("create_fixed_id", fixed.code === "OK" && fixed.id === fixedId, {
    code: fixed.code,
    details: fixed.details,
    id: fixed.id,
    sent_id: fixedId,
  });
  if (fixed.code === "OK") {
    created.push(fixedId);
    sent[fixedId] = second;
  }

  const dup = await createLaptop(newLaptop(fixedId), admin.token);
  report("create_duplicate_id", dup.code === "ALREADY_EXISTS", { code: dup.code, details: dup.details });

  const invalid = await createLaptop(newLaptop("not-a-uuid"), admin.token);
  report("create_invalid_id", invalid.code === "INVALID_ARGUMENT", { code: invalid.code, details: invalid.details });

  const anonymous = await createLaptop(newLaptop(""), undefined);
  report("create_without_token", anonymous.code === "UNAUTHENTICATED", {
    code: anonymous.code,
    details: anonymous.details,
  });

  const forged = await createLaptop(newLaptop(""), admin.token.slice(0, -4) + "AAAA");
  report("create_forged_token", forged.code === "UNAUTHENTICATED", { code: forged.code, details: forged.details });

  const asUser = await createLaptop(newLaptop(""), user.token);
  report("create_as_user", asUser.code === "PERMISSION_DENIED", { code: asUser.code, details: asUser.details });

  // SearchLaptop (server streaming): the filter's bounds are inclusive and equal the laptops' values
  const filter = { max_price_usd: LAPTOP_PRICE, min_cpu_cores: 6, min_cpu_ghz: 2.5, min_ram: { value: "16", unit: "GIGABYTE" } };
  const search = await searchLaptops(filter);
  const foundIds = search.found.map((l) => l.id).sort();
  const changed = [...new Set(search.found.flatMap((l) => changedFields(l, sent[l.id] ?? {})))];
  report(
    "search",
    search.code === "OK" && canonical(foundIds) === canonical([...created].sort()) && changed.length === 0,
    { code: search.code, details: search.details, found_ids: foundIds, created_ids: [...created].sort(), changed },
  );
  const narrower = await searchLaptops({ ...filter, max_price_usd: LAPTOP_PRICE - 0.01 });
  report("search_no_match", narrower.code === "OK" && narrower.found.length === 0, {
    code: narrower.code,
    count: narrower.found.length,
  });

  // UploadImage (client streaming)
  const laptopId = created[0] ?? fixedId;
  const image = sampleImage(10_000);
  const upload = await uploadImage(admin.token, laptopId, ".png", image, 1024);
  report("upload_image", upload.code === "OK" && upload.size === image.length && UUID_RE.test(upload.id ?? ""), {
    code: upload.code,
    details: upload.details,
    id: upload.id,
    size: upload.size,
    sent_bytes: image.length,
    chunks: upload.chunks,
  });
  const unknown = await uploadImage(admin.token, randomUUID(), ".png", sampleImage(100), 1024);
  report("upload_unknown_laptop", unknown.code === "INVALID_ARGUMENT", { code: unknown.code, details: unknown.details });

  // RateLaptop (bidirectional streaming)
  const scores = [8, 7.5, 10];
  const rate = await rateLaptop(admin.token, laptopId, scores);
  const averages = rate.answers.map((a) => a.average_score);
  report(
    "rate_laptop",
    rate.code === "OK" && canonical(averages) === canonical([8, 7.75, 8.5]) &&
      rate.answers.every((a, i) => a.laptop_id === laptopId && a.rated_count === i + 1),
    {
      code: rate.code,
      details: rate.details,
      scores,
      averages,
      counts: rate.answers.map((a) => a.rated_count),
      laptop_ids: [...new Set(rate.answers.map((a) => a.laptop_id))],
    },
  );
  const userRate = await rateLaptop(user.token, laptopId, [5]);
  report("rate_as_user", userRate.code === "OK" && userRate.answers[0]?.rated_count === 4, {
    code: userRate.code,
    details: userRate.details,
    counts: userRate.answers.map((a) => a.rated_count),
    averages: userRate.answers.map((a) => a.average_score),
  });
  const rateUnknown = await rateLaptop(admin.token, randomUUID(), [9]);
  report("rate_unknown_laptop", rateUnknown.code === "NOT_FOUND", {
    code: rateUnknown.code,
    details: rateUnknown.details,
  });
}

try {
  await main();
} catch (e) {
  report("client_crashed", false, { error: String(e?.stack ?? e) });
} finally {
  authClient.close();
  laptopClient.close();
}
process.exitCode = failures === 0 ? 0 : 1;
