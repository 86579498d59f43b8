import { writeFileSync } from "node:fs";
import { definePolicy } from "intercept-bpf";

writeFileSync("/tmp/intercept-policy-ran", "a policy file was executed");
console.log("this must never run");

export default definePolicy({ interceptors: [{ originalPort: 8000, port: 9000 }] });
