// Compiles schemas/policy.schema.json into a standalone ajv validator module
// at build time, so commands do not load ajv or compile the schema on every
// start (about 160 ms of a no-change `plan`). Run by `npm run build:ts`.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { Ajv2020 } from "ajv/dist/2020.js";
import standaloneCode from "ajv/dist/standalone/index.js";

const output = "dist/src/validate/policy-validator.js";
const schema = JSON.parse(readFileSync("schemas/policy.schema.json", "utf8"));
// The same options the messages rely on: every error, and the schema beside each (verbose).
const ajv = new Ajv2020({
  allErrors: true,
  strict: true,
  allowUnionTypes: true,
  verbose: true,
  code: { source: true, esm: true },
});
const code = standaloneCode.default(ajv, ajv.compile(schema));
// ajv's ESM output still requires its small runtime helpers.
const prelude = 'import { createRequire } from "node:module";\nconst require = createRequire(import.meta.url);\n';
mkdirSync("dist/src/validate", { recursive: true });
writeFileSync(
  output,
  `// Generated from schemas/policy.schema.json by scripts/generate-validator.mjs.\n${prelude}${code}\n`,
);
