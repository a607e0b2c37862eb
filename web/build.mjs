// Builds the web client into dist/: one hashed JS bundle, one hashed CSS file, index.html.
// `node build.mjs --tests` bundles test/*.test.ts into dist-test/ for `node --test`.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(root, "src");

async function buildClient() {
  const dist = path.join(root, "dist");
  await rm(dist, { recursive: true, force: true });
  const result = await build({
    entryPoints: { app: path.join(src, "main.ts"), styles: path.join(src, "styles.css") },
    bundle: true,
    format: "esm",
    target: ["chrome110", "firefox115", "safari16"],
    minify: true,
    sourcemap: "linked",
    entryNames: "[name]-[hash]",
    outdir: path.join(dist, "assets"),
    metafile: true,
    legalComments: "linked",
    logLevel: "warning",
  });
  const outputs = Object.keys(result.metafile.outputs).map((p) => path.basename(p));
  const js = outputs.find((n) => n.startsWith("app-") && n.endsWith(".js"));
  const css = outputs.find((n) => n.startsWith("styles-") && n.endsWith(".css"));
  if (!js || !css) throw new Error(`build produced no bundle: ${outputs.join(", ")}`);
  const template = await readFile(path.join(src, "index.html"), "utf8");
  const html = template
    .replace("%APP_JS%", `/assets/${js}`)
    .replace("%APP_CSS%", `/assets/${css}`)
    .replace("%BUILD_ID%", createHash("sha256").update(js + css).digest("hex").slice(0, 12));
  await writeFile(path.join(dist, "index.html"), html);
  console.log(`web: built dist/index.html, assets/${js}, assets/${css}`);
}

async function buildTests() {
  const out = path.join(root, "dist-test");
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  const dir = path.join(root, "test");
  const entries = (await readdir(dir)).filter((n) => n.endsWith(".test.ts"));
  await build({
    entryPoints: entries.map((n) => path.join(dir, n)),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node18",
    outdir: out,
    outExtension: { ".js": ".mjs" },
    // npm packages load from node_modules at test time (socket.io-client's node build
    // requires fs dynamically, which an ESM bundle cannot).
    packages: "external",
    logLevel: "warning",
  });
}

if (process.argv.includes("--tests")) {
  await buildTests();
} else {
  await buildClient();
}
