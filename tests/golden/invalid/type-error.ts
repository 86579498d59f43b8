import { definePolicy } from "intercept-bpf";

export default definePolicy({
  interceptors: [{ orignalPort: 8000, port: 9000 }],
});
