// An intercept policy: TCP traffic arriving on any non-loopback interface for
// port 8000 is delivered to a local proxy on port 9000 instead, and the
// proxy's replies leave from 8000 again, so clients never see port 9000.
//
// intercept reads this file as data and never runs it: `intercept validate`
// checks it, `intercept compile` writes generated/example.bpf.c (the C that
// runs in the kernel, reviewed with the policy), and `intercept plan --netns NAME`
// shows what `intercept apply` would change (run them as
// `npx --no-install intercept …`: the copy this repository installed).
//
// The same policy as YAML (policies/example.yaml), if you prefer that form:
//
//   # yaml-language-server: $schema=../node_modules/intercept-bpf/schemas/policy.schema.json
//   interceptors:
//     - originalPort: 8000
//       port: 9000
//       description: web traffic through the local proxy
import { definePolicy } from "intercept-bpf";

export default definePolicy({
  interceptors: [
    { originalPort: 8000, port: 9000, description: "web traffic through the local proxy" },
  ],
});
