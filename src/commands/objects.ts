/** `--objects DIR`: chosen in src/build/ (the agent chooses the same way); re-exported for the commands. */
export { programBuilder } from "../build/index.js";
