// Selector types in TypeScript: a range is a template literal type, so tsc
// and the schema see the same mistakes (reported once), and the rest are ours.
import { definePolicy } from "intercept-bpf";

export default definePolicy({
  interceptors: [
    { originalPorts: [8000, "9000..9100"], port: 15001 },
    { originalPorts: "all", port: 15001 },
    { originalPorts: "*", exceptPorts: ["15020-15021", 22], port: 15006, sources: ["10.0.0.0/8"], exceptSources: ["10.1.2.3/16"] },
  ],
});
