import { definePolicy, type Interceptor } from "intercept-bpf";

const web: Interceptor = { originalPort: 8000, port: 9000, protocol: "tcp" as string };

export default definePolicy({
  interceptors: [web, { originalPort: 70000, port: 9001 }, { originalPort: 8002, port: 0 }],
});
