#!/usr/bin/env node
// Thin launcher: the CLI is compiled from src/ to dist/ by `npm install` (prepare).
import { main } from "../dist/src/cli.js";

process.exitCode = await main(process.argv.slice(2));
