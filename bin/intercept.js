#!/usr/bin/env node
// Thin launcher: the CLI is compiled from src/ to dist/ by `npm run build:ts` in this repository,
// and by prepack (`npm run build:package`) into the package.
import { main } from "../dist/src/cli.js";

process.exitCode = await main(process.argv.slice(2));
