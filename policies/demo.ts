import { definePolicy } from "intercept-bpf";

// The classic scenario: new TCP connections arriving for 8000 and 8443 are
// steered to the local proxy listening on 9000 and 9443, which sees 8000 or
// 8443 as its local port (see docs/steering.md).
export default definePolicy({
  interceptors: [
    { originalPort: 8000, port: 9000 },
    { originalPort: 8443, port: 9443 },
  ],
});
