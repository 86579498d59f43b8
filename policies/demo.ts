import { definePolicy } from "intercept";

// The classic scenario: traffic arriving for 8000 and 8443 is delivered to
// the local proxy on 9000 and 9443, and its replies leave from 8000/8443.
export default definePolicy({
  interceptors: [
    { originalPort: 8000, port: 9000 },
    { originalPort: 8443, port: 9443 },
  ],
});
