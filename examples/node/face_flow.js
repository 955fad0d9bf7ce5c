#!/usr/bin/env node
// The README tour's face flow from Node.js, through the gRPC contract only: this script loads
// the .proto files under proto/convergent/v1 and nothing else of the project (no Python).
//
//   node face_flow.js DATA_DIR [--address HOST:PORT] [--api-key KEY] [--prefix P]
//   node face_flow.js DATA_DIR --missing-gallery     # a deliberate mistake: NOT_FOUND, exit 1
//
// DATA_DIR is what `convergent example-data DATA_DIR` wrote: tour.json and the raw float32
// files it names (see README.md here). Registers models dlib and facenet, streams both models'
// anchors into one anchor set, fits dlib -> facenet, enrolls the facenet gallery, identifies
// the dlib probes (top-1) with the server's default scoring and with cosine, and prints rank-1
// = the fraction of probes whose top-1 gallery id is the probe's person. The last line of
// output is one JSON object with the numbers. A failed call prints its gRPC status code name
// and details on stderr and exits 1; bad arguments or data exit 2.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");
const PROTO_FILES = ["models", "anchors", "alignment", "galleries", "info"].map((name) => `convergent/v1/${name}.proto`);
const USAGE = "usage: node face_flow.js DATA_DIR [--address HOST:PORT] [--api-key KEY] [--prefix P] [--anchor-set NAME] " +
  "[--gallery NAME] [--chunk-rows N] [--missing-gallery]\n" +
  "  address: --address, else $CONVERGENT_ADDRESS, else 127.0.0.1:50051; API key: --api-key, else $CONVERGENT_API_KEY";

class UsageError extends Error {}

function parseArgs(argv) {
  const options = {
    address: process.env.CONVERGENT_ADDRESS || "127.0.0.1:50051",
    apiKey: process.env.CONVERGENT_API_KEY || "",
    prefix: "",
    anchorSet: "att",
    gallery: "staff",
    chunkRows: 64,
    missingGallery: false,
    dataDir: null,
  };
  const valued = { "--address": "address", "--api-key": "apiKey", "--prefix": "prefix", "--anchor-set": "anchorSet",
    "--gallery": "gallery", "--chunk-rows": "chunkRows" };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "-h" || arg === "--help") {
      console.log(USAGE);
      process.exit(0);
    } else if (arg === "--missing-gallery") {
      options.missingGallery = true;
    } else if (valued[arg]) {
      if (i + 1 >= argv.length) throw new UsageError(`${arg} needs a value`);
      options[valued[arg]] = argv[++i];
    } else if (arg.startsWith("-")) {
      throw new UsageError(`unknown option ${arg}`);
    } else if (options.dataDir === null) {
      options.dataDir = arg;
    } else {
      throw new UsageError(`unexpected argument ${arg}`);
    }
  }
  if (options.dataDir === null) throw new UsageError("give the folder `convergent example-data` wrote");
  options.chunkRows = Number(options.chunkRows);
  if (!Number.isInteger(options.chunkRows) || options.chunkRows < 1) throw new UsageError("--chunk-rows must be a positive integer");
  return options;
}

// ---------------------------------------------------------------- data: tour.json + raw float32 files
function loadTour(dataDir) {
  const manifestPath = path.join(dataDir, "tour.json");
  if (!fs.existsSync(manifestPath)) {
    throw new UsageError(`${manifestPath} not found: run \`convergent example-data ${dataDir}\` first`);
  }
  const manifest = JSON.parse(fs.readFileSync(manifestPath, "utf8"));
  const matrix = (entry) => {
    if (entry.dtype !== "float32" || entry.shape.length !== 2) throw new UsageError(`unexpected array ${JSON.stringify(entry)}`);
    const [rows, cols] = entry.shape.map(Number);
    const data = fs.readFileSync(path.join(dataDir, entry.file));
    if (data.length !== rows * cols * 4) throw new UsageError(`${entry.file}: ${data.length} bytes, expected ${rows}x${cols} float32`);
    return { data, rows, cols };  // the bytes are already the wire format: little-endian, row-major float32
  };
  return {
    provenance: manifest.provenance,
    anchors: { ids: manifest.anchors.ids, dlib: matrix(manifest.anchors.dlib), facenet: matrix(manifest.anchors.facenet) },
    gallery: { ids: manifest.gallery.ids, facenet: matrix(manifest.gallery.facenet) },
    probes: { ids: manifest.probes.ids, person: manifest.probes.person, dlib: matrix(manifest.probes.dlib) },
  };
}

// Rows [start, end) of a matrix as a convergent.v1.Matrix message.
function wireMatrix(m, start = 0, end = m.rows) {
  return { data: m.data.subarray(start * m.cols * 4, end * m.cols * 4), shape: [end - start, m.cols], dtype: "DTYPE_FLOAT32" };
}

// ---------------------------------------------------------------- gRPC plumbing
function loadServices() {
  const definition = protoLoader.loadSync(PROTO_FILES, {
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_ROOT],
  });
  return grpc.loadPackageDefinition(definition).convergent.v1;
}

class CallError extends Error {
  constructor(what, error) {
    const name = Object.keys(grpc.status).find((key) => grpc.status[key] === error.code) || String(error.code);
    const requestId = error.metadata ? error.metadata.get("x-request-id")[0] : undefined;
    super(`${what} failed: ${name}: ${error.details}${requestId ? ` (request id ${requestId})` : ""}`);
    this.codeName = name;
  }
}

class Convergent {
  constructor(address, apiKey) {
    const v1 = loadServices();
    const credentials = grpc.credentials.createInsecure();
    this.info = new v1.InfoService(address, credentials);
    const shared = { channelOverride: this.info.getChannel() };  // one connection for every service
    this.models = new v1.ModelService(address, credentials, shared);
    this.anchors = new v1.AnchorService(address, credentials, shared);
    this.alignment = new v1.AlignmentService(address, credentials, shared);
    this.galleries = new v1.GalleryService(address, credentials, shared);
    this.apiKey = apiKey;
  }

  metadata() {
    const metadata = new grpc.Metadata();
    if (this.apiKey) metadata.set("x-api-key", this.apiKey);
    return metadata;
  }

  deadline(seconds) {
    return new Date(Date.now() + seconds * 1000);
  }

  waitForReady(seconds) {
    return new Promise((resolve, reject) => this.info.waitForReady(this.deadline(seconds), (error) =>
      error ? reject(new CallError("connecting", { code: grpc.status.UNAVAILABLE, details: error.message })) : resolve()));
  }

  // A unary call: service.Method(request) -> Promise of the response.
  unary(service, method, request, seconds = 30) {
    const what = `${service.constructor.service[method].path.split("/")[1].split(".").pop()}.${method}`;
    return new Promise((resolve, reject) => {
      service[method](request, this.metadata(), { deadline: this.deadline(seconds) }, (error, response) =>
        error ? reject(new CallError(what, error)) : resolve(response));
    });
  }

  // A client stream of (ids, vectors) chunks: the first message carries `header`'s fields and
  // ends_with_last, the final one last=true (a stream without it is refused as cut short).
  stream(service, method, header, ids, matrix, chunkRows, seconds = 60) {
    const what = `${service.constructor.service[method].path.split("/")[1].split(".").pop()}.${method}`;
    return new Promise((resolve, reject) => {
      const call = service[method](this.metadata(), { deadline: this.deadline(seconds) }, (error, response) =>
        error ? reject(new CallError(what, error)) : resolve(response));
      const starts = [];
      for (let start = 0; start < Math.max(ids.length, 1); start += chunkRows) starts.push(start);
      const send = async () => {
        for (const [number, start] of starts.entries()) {
          const end = Math.min(start + chunkRows, ids.length);
          const message = { ids: ids.slice(start, end), vectors: wireMatrix(matrix, start, end), last: number === starts.length - 1 };
          if (number === 0) Object.assign(message, header, { ends_with_last: true });
          if (!call.write(message)) await new Promise((drained) => call.once("drain", drained));
        }
        call.end();
      };
      send().catch((error) => { call.cancel(); reject(error); });
    });
  }

  close() {
    this.info.close();
  }
}

// ---------------------------------------------------------------- the face flow
function rank1(response, person) {
  const n = person.length;
  const k = n ? response.ids.length / n : 0;  // ids are row-major (n, k')
  let hits = 0;
  for (let i = 0; i < n; i++) if (response.ids[i * k] === person[i]) hits++;
  return n ? hits / n : 0;
}

async function identifyAll(c, request, probes, maxRows) {
  // Probes in batches the server accepts; the answers' ids (k = 1) concatenated in order.
  const ids = [];
  let last = null;
  for (let start = 0; start < probes.rows; start += maxRows) {
    const end = Math.min(start + maxRows, probes.rows);
    last = await c.unary(c.galleries, "Identify", { ...request, vectors: wireMatrix(probes, start, end) }, 60);
    ids.push(...last.ids);
  }
  return { ...last, ids };
}

async function main(options) {
  const tour = loadTour(options.dataDir);
  const c = new Convergent(options.address, options.apiKey);
  try {
    await c.waitForReady(10);
    const info = await c.unary(c.info, "GetServerInfo", {});
    // Rows per message within the server's limits (a row: 128 float32 and an id of at most 128 characters).
    const maxRows = Math.max(1, Math.min(Number(info.max_vectors_per_message),
      Math.floor((0.9 * Number(info.max_receive_message_bytes)) / (tour.anchors.dlib.cols * 4 + 140))));
    const chunkRows = Math.min(options.chunkRows, maxRows);
    console.log(`server ${options.address}: convergent ${info.version} (${info.api}); data: ${tour.provenance}`);
    const [dlib, facenet] = [`${options.prefix}dlib`, `${options.prefix}facenet`];
    const [anchorSet, gallery] = [`${options.prefix}${options.anchorSet}`, `${options.prefix}${options.gallery}`];

    if (options.missingGallery) {  // the deliberate mistake: identify against a gallery nobody enrolled
      await c.unary(c.galleries, "Identify", {
        gallery: `${options.prefix}no-such-gallery`, model: dlib, vectors: wireMatrix(tour.probes.dlib, 0, 1), k: 1,
      });
      throw new Error("identify against a missing gallery succeeded");
    }

    for (const [name, m] of [[dlib, tour.anchors.dlib], [facenet, tour.anchors.facenet]]) {
      const model = await c.unary(c.models, "RegisterModel", { name, dim: m.cols });  // normalize: the server's default (true)
      console.log(`registered ${model.name}: dim ${model.dim}, version ${model.version}, normalize ${model.normalize}`);
    }
    for (const [name, m] of [[dlib, tour.anchors.dlib], [facenet, tour.anchors.facenet]]) {
      const r = await c.stream(c.anchors, "UploadAnchors", { model: name, anchor_set: anchorSet }, tour.anchors.ids, m, chunkRows);
      console.log(`uploaded ${r.received} anchors of ${name} to ${anchorSet} in chunks of ${chunkRows}: ` +
        `${r.inserted} new, ${r.total} stored`);
    }
    const fit = await c.unary(c.alignment, "FitAlignment",
      { source: dlib, target: facenet, anchor_set: anchorSet, method: "" }, 600);  // "" = auto
    const m = fit.metrics;  // held-out diagnostics (docs/alignment.md)
    console.log(`fit ${fit.id}: ${fit.source} -> ${fit.target} by ${fit.method} (requested auto); on ${m.n_heldout} held-out ` +
      `anchors: top1 ${Number(m.top1).toFixed(3)}, r2 ${Number(m.r2).toFixed(3)}`);
    const enrolled = await c.stream(c.galleries, "Enroll", { gallery, model: facenet, index: "INDEX_KIND_EXACT" },
      tour.gallery.ids, tour.gallery.facenet, chunkRows);
    console.log(`enrolled ${enrolled.enrolled} ${facenet} vectors into ${gallery} (size ${enrolled.size})`);

    const result = { n_probes: tour.probes.person.length };
    for (const scoring of ["", "cosine"]) {  // "" = auto: CSLS for probes routed through a map
      const r = await identifyAll(c, { gallery, model: dlib, k: 1, scoring }, tour.probes.dlib, maxRows);
      const value = rank1(r, tour.probes.person);
      console.log(`rank-1 (${r.scoring}): ${value.toFixed(3)} over ${result.n_probes} probes` +
        `${scoring ? "" : " (scoring auto)"}, route ${r.route}, direction ${r.direction}`);
      result[`rank1_${r.scoring}`] = value;
      if (!scoring) Object.assign(result, { auto_scoring: r.scoring, route: r.route });
    }
    result.fit_id = fit.id;
    result.fit_method = fit.method;
    console.log(JSON.stringify(result));
  } finally {
    c.close();
  }
}

let options;
try {
  options = parseArgs(process.argv.slice(2));
} catch (error) {
  console.error(`error: ${error.message}\n${USAGE}`);
  process.exit(2);
}
main(options).catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(error instanceof UsageError ? 2 : 1);
});
