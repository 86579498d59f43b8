// A __proto__ key must stay a (rejected) property, never become the prototype.
import { definePolicy } from "intercept-bpf";

export default definePolicy({
  interceptors: [{ "__proto__": { originalPort: 8000, port: 9000 } }],
});
